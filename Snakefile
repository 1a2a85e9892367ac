# DiffSmooth reproduction pipeline. Stages live in workflow/rules/*.smk; logic lives in the
# `diffsmooth` library and its CLI, which the rules call.
#   snakemake -c2 all_tables                                   # embedded default (digits)
#   snakemake -c2 all_tables --configfile config/fast.yaml     # fast variant (tests)
#   snakemake --profile slurm all_tables --configfile config/cifar10.yaml
from snakemake.utils import min_version

min_version("9.0")

# A --configfile on the command line replaces the default instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/certify.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/targets.smk"


# Every table, figure and comparison of the configured experiment.
rule all_tables:
    default_target: True
    input:
        table_outputs(),
        # also the fused groups' merged summaries: an intermediate that was deleted is rebuilt, not skipped
        certified_rows(),


# Cheap rules (seconds, no GPU) run on the submitting host instead of queueing as SLURM jobs; each rule file
# declares its own (prepare_data, merge_group, merge_cell, import_cell, the all_* targets).
localrules:
    all_tables,
    render_tables,
