# Stage 2: training (embedded default only; the paper's checkpoints are user-supplied).


def _trained(name):
    spec = config["classifiers"][name]
    return spec.get("train") is not None


TRAINED = [n for n in config["classifiers"] if _trained(n)]
for _name in TRAINED:
    expected = f"{RESULTS}/{EXP}/checkpoints/{_name}.pt"
    if config["classifiers"][_name]["checkpoint"] != expected:
        raise ValueError(
            f"classifiers/{_name}/checkpoint must be {expected} for a classifier the pipeline trains"
        )


rule train_diffusion:
    """Digits eps-model on the linear 1000-step schedule; reports denoising MSE at each t*."""
    input:
        data_inputs(),
        code("training", "models/digits", "schedules", "purifier"),
    output:
        checkpoint=config["diffusion"]["checkpoint"],
        report=f"{RESULTS}/{EXP}/checkpoints/diffusion.report.json",
    params:
        train=config["diffusion"].get("train"),
        flags=config["diffusion"]["flags"],
        sigmas=config["sigmas"],
        seed=config["seed"],
    threads: config["threads"]
    resources:
        runtime=30,
        mem_mb=2000,
    log:
        f"{RESULTS}/{EXP}/logs/train_diffusion.log",
    shell:
        "diffsmooth train-diffusion --configfile {CONFIGFILE} --threads {threads} "
        "--report {output.report} > {log} 2>&1"


rule train_classifier:
    """Gaussian augmentation (Cohen et al.) or SmoothAdv (Salman et al.) at one sigma."""
    input:
        data_inputs(),
        code("training", "models/digits", "models/layers"),
    output:
        checkpoint=f"{RESULTS}/{EXP}/checkpoints/{{name}}.pt",
        report=f"{RESULTS}/{EXP}/checkpoints/{{name}}.report.json",
    wildcard_constraints:
        name="|".join(TRAINED) or "NONE",
    params:
        train=lambda wc: config["classifiers"][wc.name]["train"],
        seed=config["seed"],
    threads: config["threads"]
    resources:
        runtime=30,
        mem_mb=2000,
    log:
        f"{RESULTS}/{EXP}/logs/train_classifier_{{name}}.log",
    shell:
        "diffsmooth train-classifier --configfile {CONFIGFILE} --name {wildcards.name} --threads {threads} "
        "--report {output.report} > {log} 2>&1"
