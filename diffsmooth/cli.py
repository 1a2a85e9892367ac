"""`diffsmooth` command line: the steps the Snakemake rules call, each usable on its own.

Every subcommand validates its arguments and the config before any work and exits non-zero with a
message that names the problem and the fix.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from .config import DEFAULT_CONFIG
from .experiments import EXPERIMENTS_FILE

EPILOG = "Config files live in config/ (config/config.yaml: the digits default; config/fast.yaml: tests)."


def _threads(value: str) -> int:
    """--threads: a positive integer (checked by argparse, before the config is read)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer: pass a positive number of threads, "
                                         "or omit --threads to use `threads` of the config") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}: pass a positive number of threads, "
                                         "or omit --threads to use `threads` of the config")
    return n


def _config_arg(p):
    p.add_argument("--configfile", default=str(DEFAULT_CONFIG),
                   help="experiment config (validated against workflow/schemas/config.schema.yaml)")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch threads (default: `threads` of the config; Snakemake passes what it grants)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffsmooth", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="write the digits train/test split (sklearn, nothing to download)")
    _config_arg(p)
    p.add_argument("--out", help="output directory (default: dataset.root of the config)")

    p = sub.add_parser("train-diffusion", help="train the config's diffusion eps-model (digits)")
    _config_arg(p)
    p.add_argument("--out", help="checkpoint path (default: diffusion.checkpoint of the config)")
    p.add_argument("--report", help="write the training report (denoising MSE at each t*) as JSON here")

    p = sub.add_parser("train-classifier", help="train one of the config's classifiers (digits)")
    _config_arg(p)
    p.add_argument("--name", required=True, help="classifier name (a key of `classifiers:` in the config)")
    p.add_argument("--out", help="checkpoint path (default: the classifier's checkpoint in the config)")
    p.add_argument("--report", help="write the training report as JSON here")

    p = sub.add_parser("certify", help="certify one shard of images for one cell, or for a whole sigma group")
    _config_arg(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--cell", help="a cell id (see `diffsmooth cells`): one-job-per-cell mode")
    what.add_argument("--group", help="a sigma group id, e.g. digits/sigma0.25: fused mode, every cell sharing its noise")
    p.add_argument("--shard", type=int, default=None, help="shard index (default: every shard in turn)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary", help="write a JSON summary of the written shard files here (Snakemake's output)")

    p = sub.add_parser("merge", help="merge a cell's (or a sigma group's) shard rows into rows.tsv + meta.json")
    _config_arg(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--cell")
    what.add_argument("--group")
    p.add_argument("--summary", help="write a JSON summary of the merged cells here (Snakemake's output)")

    p = sub.add_parser("cells", help="list the experiment's cell ids (or sigma groups with --groups)")
    _config_arg(p)
    p.add_argument("--groups", action="store_true")

    p = sub.add_parser("tables", help="render the experiment's tables (Markdown, LaTeX, HTML, cell index), "
                       "their plots, Figure 3 and the paper comparison")
    _config_arg(p)
    p.add_argument("--out", help="output directory (default: results/tables/<experiment>)")

    p = sub.add_parser("plan", help="jobs, forward passes and estimated GPU-hours per table, before submitting")
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--throughput", metavar="FILE",
                   help="a record written by `diffsmooth throughput` (default: results/<experiment>/throughput.json "
                        "when present)")

    p = sub.add_parser("throughput", help="measure the models' samples/s on this device for `plan` and SLURM runtimes")
    _config_arg(p)
    p.add_argument("--seconds", type=float, default=10.0, help="time each model at least this long (default 10)")
    p.add_argument("--out", help="record path (default: results/<experiment>/throughput.json)")

    p = sub.add_parser("import", help="turn the config's `imports:` logs (Cohen-format or rows.tsv) into cells "
                                      "(docs/import.md)")
    _config_arg(p)
    p.add_argument("--cell", help="import only this cell id (default: every entry of `imports:`)")
    direct = p.add_argument_group("a log not in the config: checked and written to --out, not to results/")
    direct.add_argument("--log", help="the TSV; with --out and the parameters below instead of `imports:`")
    direct.add_argument("--out", help="directory for its rows.tsv and meta.json")
    for flag, kind in (("--method", str), ("--classifier", str), ("--sigma", float), ("--sigma-local", float),
                       ("--shift", float), ("--m", int), ("--N", int), ("--n0", int), ("--alpha", float)):
        direct.add_argument(flag, type=kind, dest=flag.lstrip("-").replace("-", "_"))

    p = sub.add_parser("audit", help="where a table cell's number comes from, and whether it reproduces")
    _config_arg(p)
    p.add_argument("table", nargs="?", help="table id, e.g. table4 (or a cell id)")
    p.add_argument("row", nargs="?", help="row number (1-based) or the row's label text")
    p.add_argument("column", nargs="?", help="column: a radius (e.g. 1.00) or ACR")
    p.add_argument("--cell-id", help="audit this cell id directly instead of a table position")
    p.add_argument("--verify", type=int, default=0, metavar="K", help="re-certify K images and compare")
    p.add_argument("--images", help="comma-separated image indices to verify (instead of K chosen ones)")
    p.add_argument("--json", action="store_true", help="JSON output (schema: diffsmooth/schemas/audit.schema.json)")

    p = sub.add_parser("stand-in", help="write random-weight stand-ins, in the real file formats, for every "
                                        "user-supplied file the config expects (docs/standin.md)")
    p.add_argument("--configfile", default=str(DEFAULT_CONFIG), help="experiment config whose inputs to stand in for")
    p.add_argument("--threads", type=_threads, default=None, help="torch threads (default: `threads` of the config)")
    p.add_argument("--out-root", default=".", help="directory the config's relative paths start from (default: .)")
    p.add_argument("--force", action="store_true", help="replace existing files (they may be real checkpoints!)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and images (default 0)")
    p.add_argument("--cifar-images", type=int, default=10_000, help="images in test_batch (default 10000)")
    p.add_argument("--images-per-class", type=int, default=50, help="ImageNet images per class (default 50)")
    p.add_argument("-n", "--dry-run", action="store_true", help="list what would be written, write nothing")

    p = sub.add_parser("run-experiment", help="run one experiment of config/experiments.yaml with Snakemake: the "
                                              "command of dvc.yaml's experiment@<name> stages (docs/dvc.md)")
    p.add_argument("name", nargs="?", help="experiment name (default: from $DVC_STAGE, experiment@<name>)")
    p.add_argument("--experiments", default=str(EXPERIMENTS_FILE), help="the experiments file")
    p.add_argument("--cores", type=_threads, default=2, help="Snakemake --cores (default 2, as dvc.yaml's stages)")
    p.epilog = "Arguments after `--` go to Snakemake (a profile is read from $SNAKEMAKE_PROFILE)."

    argv = sys.argv[1:] if argv is None else list(argv)
    passed_on = []  # run-experiment's Snakemake arguments: split off first, argparse would take one for the name
    if argv[:1] == ["run-experiment"] and "--" in argv:
        argv, passed_on = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    args.snakemake_args = passed_on
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted: finished images are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # our errors carry the fix in their message
        print(f"diffsmooth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only file system, permissions: the system's words plus the fix
        print(f"diffsmooth {args.command}: error: {os_error_message(e)}", file=sys.stderr)
        return 2


_OS_FIXES = {
    errno.ENOSPC: "free space on that file system (or point --results elsewhere) and rerun",
    errno.EDQUOT: "free space within your quota (or point --results elsewhere) and rerun",
    errno.EROFS: "the file system is read-only: run from a writable checkout or pass --results DIR on a writable one",
    errno.EACCES: "you lack permission there: fix the directory's permissions or pass --results DIR you can write",
    errno.EPERM: "you lack permission there: fix the directory's permissions or pass --results DIR you can write",
}


def os_error_message(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    fix = _OS_FIXES.get(e.errno, "fix the cause and rerun")
    return (f"{where}{e.strerror or e}; {fix}. Nothing half-written counts as finished: finished images and cells "
            "are kept, and a rerun continues from them")


# ---------------------------------------------------------------------------------------------------------------
# Commands: each unpacks its arguments here, at the boundary; no argparse object goes into the library.

def _prepare_data(args, config) -> int:
    from .data import prepare_digits

    if config["dataset"]["name"] != "digits":
        raise ValueError(f"prepare-data makes the digits split only; {config['dataset']['name']} is "
                         "user-supplied (see README: data/)")
    out = args.out or config["dataset"]["root"]
    sizes = prepare_digits(out, config["dataset"]["test_size"], config["seed"])
    print(f"digits: {sizes['train']} train / {sizes['test']} test images -> {out}")
    return 0


def _cells(args, config) -> int:
    from .grid import build_grid, cell_id

    grid = build_grid(config)
    for key in (grid.groups() if args.groups else [cell_id(c) for c in grid.cells]):
        print(key)
    return 0


def _certify(args, config) -> int:
    from .certify import certify_shard, validate_shards
    from .grid import build_grid

    grid = build_grid(config)
    cells, mode = _select(grid, args.cell, args.group)
    shards = [args.shard] if args.shard is not None else range(len(grid.shards()))
    dataset, digests = None, None
    if len(shards) > 1:  # every shard's checks first: no shard is certified when a later one would be refused
        dataset, digests = validate_shards(config, grid, cells, shards, results=args.results)
    for k in shards:
        out = certify_shard(config, grid, cells, k, results=args.results, mode=mode, progress=not args.no_progress,
                            command=["diffsmooth"] + sys.argv[1:], dataset=dataset, digests=digests)
        print(f"shard {k}: {out['certified']} cells certified, {out['skipped']} already complete")
    if args.summary:
        _write_summary(args.summary, args.results, grid, cells, "shards", shards)
    return 0


def _merge(args, config) -> int:
    from .grid import build_grid
    from .merge import prepare_merge, write_merge

    grid = build_grid(config)
    cells, _ = _select(grid, args.cell, args.group)
    merged = [prepare_merge(args.results, grid, c) for c in cells]  # validate every cell before writing one
    for m in merged:
        write_merge(*m)
    if args.summary:
        _write_summary(args.summary, args.results, grid, cells, "merged", None)
    print(f"merged {len(cells)} cells")
    return 0


def _tables(args, config) -> int:
    from .grid import build_grid
    from .importing import check_imported_cells
    from .paths import Layout, contained
    from .report import render_all
    from .rows import read_rows

    grid = build_grid(config)
    check_imported_cells(grid, args.results)
    layout = Layout(args.results, grid.experiment)
    for c in grid.cells:  # every rows file is read and validated before the first table is written
        read_rows(contained(layout.rows(c), args.results))
    out = Path(args.out) if args.out else contained(layout.tables_dir, args.results)
    written = render_all(grid, args.results, out)
    print(f"{len(written)} files written to {out}/")
    return 0


def _plan(args, config) -> int:
    from .grid import build_grid
    from .plan import make_plan, print_plan

    plan = make_plan(build_grid(config), args.results, args.throughput)
    print(json.dumps(plan, indent=2) if args.json else print_plan(plan))
    return 0


def _throughput(args, config) -> int:
    import torch

    from .certify import resolve_device
    from .config import Settings
    from .grid import build_grid
    from .rows import atomic_write_json
    from .throughput import default_path, measure

    if args.seconds < 0:
        raise ValueError(f"--seconds must be >= 0, got {args.seconds}")
    grid = build_grid(config)
    settings = Settings.of(config)
    torch.set_num_threads(settings.threads)
    record = measure(config, grid.cells, resolve_device(settings.device), args.seconds)
    out = Path(args.out or default_path(args.results, grid.experiment))
    atomic_write_json(out, record)
    print(f"throughput on {record['device']} -> {out} (used by `diffsmooth plan` and the SLURM runtimes)")
    return 0


def _import(args, config) -> int:
    from . import importing
    from .grid import build_grid

    grid = build_grid(config)
    declared = {k: getattr(args, k) for k in importing.DECLARED if getattr(args, k, None) is not None}
    if args.log:
        if args.cell:
            raise importing.LogImportError("give either --cell (an entry of `imports:`) or --log (a log not in "
                                           "the config)")
        path = importing.import_log_to(grid, args.log, args.out, declared)
        print(f"{args.log} -> {path}")
        return 0
    if declared or args.out:
        stray = [f"--{k.replace('_', '-')}" for k in declared] + (["--out"] if args.out else [])
        raise importing.LogImportError(f"{', '.join(stray)} only go with --log (a log not in the config); the "
                                       "config's `imports:` entries declare their own parameters")
    if not grid.imported:
        print(f"{grid.experiment}: the config has no `imports:` entries, nothing to import (docs/import.md)")
        return 0
    for path in importing.import_cells(grid, args.results, args.cell):
        print(f"imported -> {path}")
    return 0


def _audit(args, config) -> int:
    from .audit import print_audit
    from .grid import build_grid

    return print_audit(config, build_grid(config), results=args.results, table=args.table, row=args.row,
                       column=args.column, cell=args.cell_id, verify=args.verify, images=args.images,
                       threads=args.threads, as_json=args.json)


def _stand_in(args, config) -> int:
    """List (--dry-run) or write the stand-ins; one line per file."""
    import torch

    from . import standin
    from .config import Settings

    torch.set_num_threads(Settings.of(config).threads)
    items = standin.expected(config, args.out_root)
    if not items:
        print(f"{args.configfile}: nothing to stand in for (the pipeline makes every input of this experiment)")
        return 0
    if args.dry_run:
        for item in items:
            state = "exists, kept" if standin.present(item) and not args.force else "would be written"
            print(f"{state:17} {item.path} ({item.container})")
        return 0
    done = standin.write_stand_ins(config, args.out_root, force=args.force, seed=args.seed,
                                   cifar_images=args.cifar_images, images_per_class=args.images_per_class)
    written = sum(1 for _, state in done if state == "written")
    print(f"{written} stand-in(s) written, {len(done) - written} existing file(s) kept. Random weights: "
          "the pipeline runs on them, but their certified accuracies mean nothing.")
    return 0


COMMANDS = {
    "prepare-data": _prepare_data, "train-diffusion": None, "train-classifier": None, "certify": _certify,
    "merge": _merge, "cells": _cells, "tables": _tables, "plan": _plan, "throughput": _throughput,
    "import": _import, "audit": _audit, "stand-in": _stand_in,
}


def _run_experiment(args) -> int:
    from .experiments import run_experiment

    return run_experiment(args.name, args.cores, args.snakemake_args, path=args.experiments)


def _run(args) -> int:
    from .config import load_config

    if args.command == "run-experiment":  # the one command without a --configfile: its config is the entry's
        return _run_experiment(args)

    config = load_config(args.configfile)
    if args.threads is not None:
        if args.threads < 1:  # main() checks it; callers of _run with a hand-made namespace may not
            raise ValueError(f"--threads must be >= 1, got {args.threads}: pass a positive number of threads")
        config["threads"] = args.threads
    return (COMMANDS[args.command] or _train)(args, config)


def _select(grid, cell, group):
    if cell in grid.imported:
        raise ValueError(f"cell {cell} is imported from {grid.imported[cell].log} (`imports:`), not certified: "
                         f"run `diffsmooth import --configfile <config> --cell {cell}`")
    if cell:
        return [grid.cell_by_id(cell)], "per_cell"
    groups = grid.groups()
    if group not in groups:
        raise ValueError(f"unknown sigma group {group!r}: use one of {', '.join(groups)}")
    return groups[group], "fused"


def _write_summary(path, results, grid, cells, kind, shards) -> None:
    """A job's output file: which rows files it wrote and their sha256 (so Snakemake sees one file)."""
    from .grid import cell_id
    from .merge import shard_paths
    from .paths import Layout, contained
    from .rows import atomic_write_json, sha256_file

    files = []
    for c in cells:
        paths = ([contained(Layout(results, grid.experiment).rows(c), results)] if kind == "merged"
                 else [shard_paths(results, grid.experiment, c, k)[0] for k in shards])
        files += [{"cell_id": cell_id(c), "rows": str(p), "sha256": sha256_file(p)} for p in paths]
    atomic_write_json(path, {"experiment": grid.experiment, "kind": kind, "files": files})


def _train(args, config) -> int:
    import torch

    from . import training
    from .schedules import schedule_from_flags

    torch.set_num_threads(config["threads"])
    if config["dataset"]["name"] != "digits":
        raise ValueError("the pipeline trains models for the digits experiment only; the paper's checkpoints "
                         "are user-supplied (see README)")
    root = config["dataset"]["root"]
    if args.command == "train-diffusion":
        spec = config["diffusion"]
        if not spec.get("train"):
            raise ValueError("diffusion.train is not set: this experiment's diffusion model is user-supplied")
        schedule = schedule_from_flags(spec["flags"])
        report = training.train_diffusion(root, args.out or spec["checkpoint"], config["sigmas"], seed=config["seed"],
                                          schedule=schedule, **spec["train"])
    else:
        if args.name not in config["classifiers"]:
            raise ValueError(f"unknown classifier {args.name!r}: use one of {', '.join(config['classifiers'])}")
        spec = config["classifiers"][args.name]
        if not spec.get("train"):
            raise ValueError(f"classifier {args.name!r} is user-supplied (no `train:` entry)")
        t = dict(spec["train"])
        method, sigma = t.pop("method"), float(t.pop("sigma"))
        adv = {k: t.pop(k) for k in ("eps", "steps", "m", "warmup_epochs") if k in t}
        report = training.train_classifier(root, args.out or spec["checkpoint"], sigma, method,
                                           seed=config["seed"], smoothadv=adv or None, **t)
    if args.report:
        from .rows import atomic_write_json

        atomic_write_json(args.report, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
