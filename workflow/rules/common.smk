# Shared set-up: config validation, the experiment grid, paths and code dependencies.
import os
from pathlib import Path

from snakemake.utils import validate

from diffsmooth.grid import build_grid, cell_id, group_id, group_summary_path, validate_config
from diffsmooth.plan import job_estimate, throughput
from diffsmooth.throughput import settings as throughput_settings

if workflow.config_settings.config or len(workflow.overwrite_configfiles) > 1:
    raise ValueError(
        "--config overrides and several --configfile are not supported: the rules pass one config *file* "
        "to the diffsmooth CLI, so edit a copy of the config and pass it with a single --configfile"
    )

CONFIGFILE = os.path.relpath((workflow.overwrite_configfiles or ["config/config.yaml"])[-1])
# our validation first: the same schema, but messages that name the key and the fix
validate_config(config, source=CONFIGFILE)
validate(config, "../schemas/config.schema.yaml")
GRID = build_grid(config)
EXP = GRID.experiment
RESULTS = "results"
SHARDS = list(range(len(GRID.shards())))
GROUPS = GRID.groups()
FUSED = config["certify"]["mode"] == "fused"

wildcard_constraints:
    shard=r"\d+",
    key=r"[0-9a-f]{10}",
    group=r"[a-z0-9]+/sigma[0-9.]+",


def code(*modules):
    """Library sources a rule depends on, so a code change reruns it."""
    return [f"diffsmooth/{m}.py" for m in modules]


CERTIFY_CODE = code("smoothing", "noise", "purifier", "statistics", "schedules", "certify", "rows", "data",
                    "models/digits", "models/layers", "models/checkpoints", "models/zoo", "models/unet",
                    "models/resnet_cifar")


# Checkpoints the pipeline trains itself (digits); all others are user-supplied files.
PIPELINE_CHECKPOINTS = {spec["checkpoint"] for spec in config["classifiers"].values() if spec.get("train")} | (
    {config["diffusion"]["checkpoint"]} if config["diffusion"].get("train") else set()
)


def checkpoints_for(cells):
    paths = {config["classifiers"][c.classifier]["checkpoint"] for c in cells}
    if any(c.uses_diffusion for c in cells):
        paths.add(config["diffusion"]["checkpoint"])
    if workflow.dryrun:
        # A dry run lists the whole job plan before the user-supplied checkpoints are in place; a real run
        # stops before any job, naming every missing file (check_user_inputs in workflow/rules/tables.smk).
        paths = {p for p in paths if p in PIPELINE_CHECKPOINTS or os.path.exists(p)}
    return sorted(paths)


def data_inputs():
    if config["dataset"]["name"] == "digits":
        return [f"{config['dataset']['root']}/test.npz"]
    return []  # user-supplied datasets are checked by the CLI with a message naming the missing files


# samples/s of the models: measured by `measure_throughput` (results/<exp>/throughput.json) when it has run
# with the config's settings, otherwise the planner's defaults (diffsmooth/plan.py).
THROUGHPUT = throughput(GRID, RESULTS)


def certify_resources(cells, images):
    """SLURM runtime (minutes) and memory scale with the work: samples x (1 purifier + classifier passes)."""
    est = job_estimate(GRID, cells, images, THROUGHPUT)
    return {"runtime": est["runtime_min"], "mem_mb": est["mem_mb"]}
