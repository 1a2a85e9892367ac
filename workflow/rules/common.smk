# Shared set-up: config validation, the experiment grid, paths and code dependencies. Everything here is
# read from the library (diffsmooth.config, .grid, .paths, .codedeps), which parses without loading torch.
import json
import os
import re
import sysconfig
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from diffsmooth.cell import CERTIFY_VERSION
from diffsmooth.codedeps import product_sources
from diffsmooth.compare import compared_tables, paper_number
from diffsmooth.config import DEFAULT_CONFIG, check_default_config, check_layers, validate_config, write_effective
from diffsmooth.grid import build_grid, cell_id, group_id, group_summary_path
from diffsmooth.paths import Layout
from diffsmooth.plan import job_estimate, throughput
from diffsmooth.rows import sha256_file
from diffsmooth.throughput import settings as throughput_settings

# Jobs run the `diffsmooth` CLI installed beside the interpreter that runs Snakemake (the venv's bin/), so
# nothing needs activating, locally or in a SLURM job (which parses this file again with that interpreter).
os.environ.update(PATH=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
# The rules name no conda env or container (the one lint item left): each runs this project's own environment
# (pyproject.toml), and conda channels cannot be reached from the machines this project is tested on, so such
# envs would ship untested.

# The config: one complete base (config/config.yaml, or the first --configfile) with later --configfile files and
# --config key=value layered on it by Snakemake (mappings merged key by key, other values replaced). Our loader
# reads every file again: Snakemake's lets a repeated key silently win, ours refuses it; two complete configs are
# refused (their merge would mix two grids).
check_default_config()
CONFIGFILES = [os.path.relpath(p) for p in workflow.overwrite_configfiles] or [str(DEFAULT_CONFIG)]
LAYERED = len(CONFIGFILES) > 1 or bool(workflow.config_settings.config)
check_layers(CONFIGFILES)
# our validation first: the same schema, but messages that name the key and the fix
validate_config(config, source=" + ".join(CONFIGFILES) + (" + --config" if workflow.config_settings.config else ""))
validate(config, "../../diffsmooth/schemas/config.schema.yaml")
GRID = build_grid(config)
EXP = GRID.experiment
RESULTS = "results"
LAYOUT = Layout(RESULTS, EXP)
# Passed to every job as {params.config:q} (a path with spaces or shell characters stays one argument): the
# config file itself, or, with overrides, the merged config written under results/<experiment>/.
CONFIGFILE = str(LAYOUT.effective_config) if LAYERED else CONFIGFILES[0]
if LAYERED and not workflow.dryrun:
    write_effective(config, CONFIGFILE)
SHARDS = list(range(len(GRID.shards())))
GROUPS = GRID.groups()
FUSED = config["certify"]["mode"] == "fused"


wildcard_constraints:
    shard=r"\d+",
    key=r"[0-9a-f]{10}",
    group=r"[a-z0-9]+/sigma[0-9.]+",


def code(product):
    """Library sources a product depends on: the modules that make it and everything they import
    (diffsmooth.codedeps, the same lists dvc.yaml's deps are checked against), so a code change reruns what it
    affects. Certification rules list none: they rerun when CERTIFY_VERSION changes (diffsmooth/cell.py)."""
    return product_sources(product)


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


# ---------------------------------------------------------------------------------------------------------------
# Certification (workflow/rules/certify.smk)

# what the jobs' speed settings are; a change reruns the jobs (and the CLI refuses rows of other settings)
SPEED = {k: config["certify"][k] for k in ("precision", "compile", "channels_last", "batch_size")}


def get_group_cells(wildcards):
    return GROUPS[wildcards.group]


def get_shard_images(wildcards):
    return GRID.shards()[int(wildcards.shard)]


def get_group_checkpoints(wildcards):
    return checkpoints_for(get_group_cells(wildcards))


def get_cell(wildcards):
    return GRID.cell_by_id(wildcards.cell)


def get_cell_checkpoints(wildcards):
    return checkpoints_for([get_cell(wildcards)])


def group_summary(group, shard=None):
    return group_summary_path(GRID, group, None if shard is None else int(shard), RESULTS)


def certified_rows():
    """What the tables read: merged cells (per-cell mode) or the merged groups (fused mode), and imported cells."""
    if FUSED:
        return [group_summary(g) for g in GROUPS] + imported_rows()
    return [str(LAYOUT.rows(c)) for c in GRID.cells]


# ---------------------------------------------------------------------------------------------------------------
# Imported cells (workflow/rules/import.smk)

IMPORTED = GRID.imported  # cell id -> diffsmooth.importing.ImportEntry


def imported_rows():
    """The imported cells' rows files (what the tables read of them)."""
    return [str(LAYOUT.rows(cid)) for cid in IMPORTED]


def get_import_log(wildcards):
    """The log of an imported cell. A dry run lists the job before the log is in place, like the user-supplied
    checkpoints (checkpoints_for); a real run stops first, naming it (check_user_inputs in tables.smk)."""
    log = IMPORTED[wildcards.cell].log
    return [] if workflow.dryrun and not os.path.exists(log) else [log]


def missing_import_logs():
    return [f"{e.log} (log of imported cell {cid})" for cid, e in IMPORTED.items() if not os.path.exists(e.log)]


# ---------------------------------------------------------------------------------------------------------------
# Tables (workflow/rules/tables.smk)

TABLES_DIR = str(LAYOUT.tables_dir)
REPORT_DIR = "../report"


def _report(path, caption, category, **labels):
    return report(path, caption=f"{REPORT_DIR}/{caption}", category=category, subcategory=EXP, labels=labels)


def table_outputs(flag_report=False):
    """Every file `diffsmooth tables` writes; with flag_report, the ones shown in the report are marked."""
    out = []
    compared = compared_tables(GRID)
    for spec in GRID.tables:
        base = f"{TABLES_DIR}/{spec.id}"
        paper = config["tables"][spec.id].get("paper", "")
        out += [f"{base}.{ext}" for ext in ("md", "tex", "cells.csv")]
        html = f"{base}.html"
        out.append(_report(html, f"{spec.kind}.rst", "Tables", table=spec.id, paper=paper) if flag_report else html)
        if spec.kind == "m_ladder":
            png = f"{base}.png"
            out.append(_report(png, "m_ladder.rst", "Figures", figure=spec.id, paper=paper) if flag_report else png)
            out.append(f"{base}.pdf")
        else:  # certified accuracy vs. radius, the paper's values as markers (diffsmooth.plots.plot_table)
            png = f"{base}.plot.png"
            out.append(
                _report(png, "plot.rst", "Figures", figure=f"{spec.id}.plot", paper=paper) if flag_report else png
            )
            out.append(f"{base}.plot.pdf")
        if spec.id in compared:
            csv = f"{base}.compare.csv"
            out.append(
                _report(csv, "compare_csv.rst", "Paper vs. reproduced", file=f"{spec.id}.compare.csv")
                if flag_report
                else csv
            )
    summary = f"{TABLES_DIR}/comparison.html"
    out.append(
        _report(summary, "comparison.rst", "Paper vs. reproduced", file="comparison.html") if flag_report else summary
    )
    out.append(f"{TABLES_DIR}/comparison.md")
    # DVC's metrics and plot data (diffsmooth.report.write_dvc_files), outside the tables stage's out folder
    out.append(str(LAYOUT.metrics))
    out += [str(LAYOUT.plots_dir / f"{spec.id}.csv") for spec in GRID.tables]
    return out


def _dataset_missing():
    """The user-supplied dataset files the CLI would fail on, with how to get them ([] when present)."""
    name, root = config["dataset"]["name"], Path(config["dataset"]["root"])
    if name == "cifar10":
        if not ((root / "cifar-10-batches-py" / "test_batch").exists() or (root / "test_batch").exists()):
            return [f"{root}/cifar-10-batches-py/test_batch (CIFAR-10 python version, test split)"]
    elif name == "imagenet":
        base = root / "val" if (root / "val").is_dir() else root
        if not (base.is_dir() and any(p.is_dir() for p in base.iterdir())):
            return [f"{root}/val/<wnid>/*.JPEG (ImageNet validation set, one folder per class: valprep.sh)"]
    return []  # digits: made by rule prepare_data


def get_paper_tables():
    """The paper's transcribed tables the comparison reads (package data)."""
    numbers = {paper_number(GRID, s) for s in GRID.tables if s.id in compared_tables(GRID)}
    return [f"diffsmooth/paper_tables/table{n:02d}.csv" for n in sorted(numbers)]


def check_user_inputs(wildcards):
    """Fail a real run before any job starts when certification still has to run and a user-supplied
    file is missing, naming every missing file (a dry run only lists the plan). Returns no inputs."""
    if workflow.dryrun or not workflow.is_main_process:
        return []
    if all(os.path.exists(p) for p in certified_rows()):
        return []  # nothing left to certify: the tables need only the rows
    computed = [c for g in GROUPS.values() for c in g]  # imported cells need their logs, not models or data
    missing = (_dataset_missing() if computed else []) + missing_import_logs()
    missing += [p for p in checkpoints_for(computed) if p not in PIPELINE_CHECKPOINTS and not os.path.exists(p)]
    if missing:
        sources = {
            spec["checkpoint"]: spec.get("source") for spec in [*config["classifiers"].values(), config["diffusion"]]
        }
        lines = [f"  {p}" + (f"\n      source: {sources[p]}" if sources.get(p) else "") for p in missing]
        raise WorkflowError(
            f"experiment {EXP}: {len(missing)} user-supplied input file(s) missing, nothing was started:\n"
            + "\n".join(lines)
            + f"\nPlace them there (paths from {CONFIGFILE}); `snakemake -n` lists the job plan without them."
        )
    return []


def check_merged_rows(wildcards):
    """The merged rows a group's summary lists must still be there, unchanged. A deleted merged summary is
    rebuilt (all_tables needs it directly); a deleted or edited rows.tsv/meta.json is not a file Snakemake
    watches, so name it and the fix before rendering from it. Returns no inputs."""
    forced = workflow.dag_settings.forceall or "merge_group" in workflow.dag_settings.forcerun
    if workflow.dryrun or not workflow.is_main_process or not FUSED or forced:
        return []
    stale = []
    for group in GROUPS:
        summary = Path(group_summary(group))
        if not summary.exists():
            continue  # merge_group (re)makes it
        try:
            files = json.loads(summary.read_text())["files"]
        except (ValueError, KeyError, TypeError):
            stale.append(f"{summary} (damaged)")
            continue
        for f in files:
            rows = Path(f["rows"])
            if not rows.exists() or not LAYOUT.meta(f["cell_id"]).exists():
                stale.append(f"{rows} or its meta.json (missing)")
            elif sha256_file(rows) != f["sha256"]:
                stale.append(f"{rows} (changed since {summary.name} recorded it)")
    if stale:
        raise WorkflowError(
            f"{len(stale)} merged cell file(s) are missing or changed since their group was merged:\n  "
            + "\n  ".join(stale[:10])
            + "\nMerge them again from their shards (nothing is recomputed): "
            "snakemake all_tables --forcerun merge_group"
        )
    return []


# ---------------------------------------------------------------------------------------------------------------
# Targets (workflow/rules/targets.smk)


def trained_outputs():
    """Checkpoints (and their training reports) that the pipeline trains itself; [] for user-supplied ones."""
    out = []
    if config["diffusion"].get("train"):
        out += [config["diffusion"]["checkpoint"], str(LAYOUT.training_report("diffusion"))]
    for name in TRAINED:
        out += [str(LAYOUT.checkpoint(name)), str(LAYOUT.training_report(name))]
    return out
