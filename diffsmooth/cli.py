"""`diffsmooth` command line: the steps the Snakemake rules call, each usable on its own.

Every subcommand validates its arguments and the config before any work and exits non-zero with a
message that names the problem and the fix.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    p.add_argument("--configfile", default="config/config.yaml",
                   help="experiment config (validated against workflow/schemas/config.schema.yaml)")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch threads (default: `threads` of the config; Snakemake passes what it grants)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffsmooth", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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

    p = sub.add_parser("tables", help="render the experiment's tables (Markdown, LaTeX, cell index, paper comparison)")
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

    p = sub.add_parser("audit", help="where a table cell's number comes from, and whether it reproduces")
    _config_arg(p)
    p.add_argument("table", nargs="?", help="table id, e.g. table4 (or a cell id)")
    p.add_argument("row", nargs="?", help="row number (1-based) or the row's label text")
    p.add_argument("column", nargs="?", help="column: a radius (e.g. 1.00) or ACR")
    p.add_argument("--cell-id", help="audit this cell id directly instead of a table position")
    p.add_argument("--verify", type=int, default=0, metavar="K", help="re-certify K images and compare")
    p.add_argument("--images", help="comma-separated image indices to verify (instead of K chosen ones)")
    p.add_argument("--json", action="store_true", help="JSON output (schema: workflow/schemas/audit.schema.json)")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted: finished images are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # our errors carry the fix in their message
        print(f"diffsmooth {args.command}: error: {e}", file=sys.stderr)
        return 2


def _throughput(args, config, grid) -> int:
    import torch

    from .certify import resolve_device
    from .rows import atomic_write_json
    from .throughput import default_path, measure

    if args.seconds < 0:
        raise ValueError(f"--seconds must be >= 0, got {args.seconds}")
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    record = measure(config, grid.cells, device, args.seconds)
    out = Path(args.out or default_path(args.results, grid.experiment))
    atomic_write_json(out, record)
    print(f"throughput on {record['device']} -> {out} (used by `diffsmooth plan` and the SLURM runtimes)")
    return 0


def _run(args) -> int:
    from .grid import build_grid, load_config

    config = load_config(args.configfile)
    if args.threads is not None:
        if args.threads < 1:  # main() checks it; callers of _run with a hand-made namespace may not
            raise ValueError(f"--threads must be >= 1, got {args.threads}: pass a positive number of threads")
        config["threads"] = args.threads
    if args.command == "prepare-data":
        from .data import prepare_digits

        if config["dataset"]["name"] != "digits":
            raise ValueError(f"prepare-data makes the digits split only; {config['dataset']['name']} is "
                             "user-supplied (see README: data/)")
        sizes = prepare_digits(args.out or config["dataset"]["root"], config["dataset"].get("test_size", 300),
                               config["seed"])
        print(f"digits: {sizes['train']} train / {sizes['test']} test images -> {args.out or config['dataset']['root']}")
        return 0
    if args.command in ("train-diffusion", "train-classifier"):
        return _train(args, config)
    grid = build_grid(config)
    if args.command == "cells":
        from .grid import cell_id

        for key in (grid.groups() if args.groups else [cell_id(c) for c in grid.cells]):
            print(key)
        return 0
    if args.command == "certify":
        from .certify import certify_shard, validate_shards

        cells, mode = _select(grid, args.cell, args.group)
        shards = [args.shard] if args.shard is not None else range(len(grid.shards()))
        dataset, digests = None, None
        if len(shards) > 1:  # every shard's checks first: no shard is certified when a later one would be refused
            dataset, digests = validate_shards(config, grid, cells, shards, results=args.results)
        for k in shards:
            out = certify_shard(config, grid, cells, k, results=args.results, mode=mode,
                                progress=not args.no_progress, command=["diffsmooth"] + sys.argv[1:],
                                dataset=dataset, digests=digests)
            print(f"shard {k}: {out['certified']} cells certified, {out['skipped']} already complete")
        if args.summary:
            _write_summary(args.summary, args.results, grid, cells, "shards", shards)
        return 0
    if args.command == "merge":
        from .certify import prepare_merge, write_merge

        cells, _ = _select(grid, args.cell, args.group)
        merged = [prepare_merge(args.results, grid, c) for c in cells]  # validate every cell before writing one
        for m in merged:
            write_merge(*m)
        if args.summary:
            _write_summary(args.summary, args.results, grid, cells, "merged", None)
        print(f"merged {len(cells)} cells")
        return 0
    if args.command == "tables":
        from .certify import cell_dir
        from .rows import read_rows
        from .tables import render_all

        for c in grid.cells:  # every rows file is read and validated before the first table is written
            read_rows(cell_dir(args.results, grid.experiment, c) / "rows.tsv")
        out = Path(args.out or Path(args.results) / "tables" / grid.experiment)
        written = render_all(grid, args.results, out)
        print(f"{len(written)} files written to {out}/")
        return 0
    if args.command == "plan":
        from .plan import make_plan, print_plan

        plan = make_plan(grid, args.results, args.throughput)
        print(json.dumps(plan, indent=2) if args.json else print_plan(plan))
        return 0
    if args.command == "throughput":
        return _throughput(args, config, grid)
    if args.command == "audit":
        from .audit import run_audit

        return run_audit(args, config, grid)
    raise AssertionError(args.command)


def _select(grid, cell, group):
    if cell:
        return [grid.cell_by_id(cell)], "per_cell"
    groups = grid.groups()
    if group not in groups:
        raise ValueError(f"unknown sigma group {group!r}: use one of {', '.join(groups)}")
    return groups[group], "fused"


def _write_summary(path, results, grid, cells, kind, shards) -> None:
    """A job's output file: which rows files it wrote and their sha256 (so Snakemake sees one file)."""
    from .certify import cell_dir, shard_paths
    from .grid import cell_id
    from .models import sha256_file
    from .rows import atomic_write_json

    files = []
    for c in cells:
        paths = ([cell_dir(results, grid.experiment, c) / "rows.tsv"] if kind == "merged"
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
