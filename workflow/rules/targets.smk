# Named targets, one per coarse stage of the DVC pipeline (dvc.yaml): every stage runs
# `snakemake -c2 <target>`, and Snakemake decides which jobs inside it need to run.
#   all_data -> all_models -> all_certified -> all_tables (Snakefile)


rule all_data:
    """The dataset files the experiment reads (digits: made by prepare_data; others: user-supplied)."""
    input:
        data_inputs(),


rule all_models:
    """Every checkpoint the pipeline trains (diffusion model and smoothed classifiers)."""
    input:
        data_inputs(),
        trained_outputs(),


rule all_certified:
    """Every certified cell of the experiment, merged (per sigma group in fused mode, per cell otherwise)."""
    input:
        certified_rows(),


localrules:
    all_data,
    all_models,
    all_certified,
