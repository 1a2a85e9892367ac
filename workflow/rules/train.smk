# Stage 2: training, only of what the config says the pipeline makes (a `train:` block: the digits models).
# Every other checkpoint is the user's file: an input that must exist, never a rule's output, so Snakemake
# can never schedule a job for it or delete it after a failure, whatever its modification time.

TRAINED = [name for name, spec in config["classifiers"].items() if spec.get("train")]
for _name in TRAINED:
    if config["classifiers"][_name]["checkpoint"] != str(LAYOUT.checkpoint(_name)):
        raise ValueError(
            f"classifiers/{_name}/checkpoint must be {LAYOUT.checkpoint(_name)} for a classifier the pipeline trains"
        )


if config["diffusion"].get("train"):

    rule train_diffusion:
        """Digits eps-model on the linear 1000-step schedule; reports denoising MSE at each t*."""
        input:
            data_inputs(),
            code("train"),
        output:
            checkpoint=config["diffusion"]["checkpoint"],
            report=str(LAYOUT.training_report("diffusion")),
        log:
            str(LAYOUT.log("train_diffusion", "diffusion")),
        threads: config["threads"]
        resources:
            runtime=30,
            mem_mb=2000,
        params:
            config=CONFIGFILE,
            train=config["diffusion"]["train"],
            flags=config["diffusion"]["flags"],
            sigmas=config["sigmas"],
            seed=config["seed"],
        shell:
            "diffsmooth train-diffusion --configfile {params.config:q} --threads {threads} "
            "--report {output.report:q} > {log:q} 2>&1"


if TRAINED:

    rule train_classifier:
        """Gaussian augmentation (Cohen et al.) or SmoothAdv (Salman et al.) at one sigma."""
        input:
            data_inputs(),
            code("train"),
        output:
            checkpoint=str(LAYOUT.checkpoint("{name}")),
            report=str(LAYOUT.training_report("{name}")),
        log:
            str(LAYOUT.log("train_classifier", "{name}")),
        wildcard_constraints:
            name="|".join(re.escape(n) for n in TRAINED),
        threads: config["threads"]
        resources:
            runtime=30,
            mem_mb=2000,
        params:
            config=CONFIGFILE,
            train=lambda wc: config["classifiers"][wc.name]["train"],
            seed=config["seed"],
        shell:
            "diffsmooth train-classifier --configfile {params.config:q} --name {wildcards.name:q} "
            "--threads {threads} --report {output.report:q} > {log:q} 2>&1"
