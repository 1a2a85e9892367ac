"""Certification jobs: one shard of images for one cell (per-cell mode) or for every cell of a
(dataset, sigma) group (fused mode), with durable per-image rows, resume after a kill, metadata for
audits, and merging of shards into a cell's rows.

A finished cell is never recomputed or overwritten: its rows are skipped when the stored parameters
match, and the job refuses (naming the differences) when they do not.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .data import dataset_info, images_digest, load_dataset
from .grid import REPO_ROOT, Grid, cell_id
from .noise import BLOCK
from .purifier import OneShotPurifier
from .rows import (DurableRowsWriter, atomic_write_json, format_row, parse_lines, read_rows)
from .schedules import schedule_from_flags
from .smoothing import Cell, Certifier


class CertificationError(RuntimeError):
    """Refused before or during work; the message names the problem and the fix."""


def cell_dir(results: Path, experiment: str, cell: Cell) -> Path:
    return Path(results) / experiment / "cells" / cell_id(cell)


def shard_paths(results, experiment, cell: Cell, shard: int) -> tuple[Path, Path]:
    base = cell_dir(results, experiment, cell) / "shards" / f"{shard:04d}"
    return base.with_suffix(".tsv"), base.with_suffix(".json")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CertificationError(f"device {name!r} requested but CUDA is not available: set `device: cpu` or `auto`")
    return device


def code_version() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "diffsmooth")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict:
    import scipy

    return {"diffsmooth": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__}


def _cell_identity(cell: Cell, images, config) -> dict:
    """Everything that must match for stored rows to be reused for this cell and these images."""
    return {"cell": cell.to_dict(), "images": list(images), "noise_block": BLOCK,
            "diffusion": config["diffusion"]["checkpoint"] if cell.uses_diffusion else None,
            "classifier": config["classifiers"][cell.classifier]["checkpoint"]}


def _identity_diff(stored: dict, wanted: dict) -> list[str]:
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if key == "cell" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: stored {str(a)[:60]}, now {str(b)[:60]}")
    return diffs


def load_models(config: dict, cells, device, dataset: str):
    """Classifiers named by the cells and, when needed, the purifier for the group's sigma (strict loads)."""
    from .models import load_classifier, load_diffusion

    classifiers, infos = {}, {}
    for name in sorted({c.classifier for c in cells}):
        spec = config["classifiers"][name]
        path = Path(spec["checkpoint"])
        if not path.exists():
            raise CertificationError(f"classifier checkpoint {path} (classifier {name!r}) does not exist: "
                                     + _checkpoint_hint(spec))
        model, info = load_classifier(path, dataset, arch=spec["arch"], normalization=spec.get("normalization"),
                                      map_location=device)
        classifiers[name] = model.eval().requires_grad_(False)
        infos[name] = info
    purifier, dinfo = None, None
    if any(c.uses_diffusion for c in cells):
        spec = config["diffusion"]
        path = Path(spec["checkpoint"])
        if not path.exists():
            raise CertificationError(f"diffusion checkpoint {path} does not exist: " + _checkpoint_hint(spec))
        eps_model, dinfo = load_diffusion(path, flags=spec["flags"], map_location=device)
        schedule = schedule_from_flags(spec["flags"])
        purifier = OneShotPurifier(eps_model.eval().requires_grad_(False), schedule, cells[0].sigma)
        dinfo = {**dinfo, "t_star": purifier.t_star, "model_time": purifier.model_time}
    return classifiers, purifier, infos, dinfo


def _checkpoint_hint(spec: dict) -> str:
    if spec.get("train"):
        return "it is trained by the pipeline: run `snakemake -c2 all_tables` (or the train rules) first"
    src = f" (public source: {spec['source']})" if spec.get("source") else ""
    return f"the paper's checkpoints are user-supplied: download it and place it there{src}, or `dvc pull`"


def certify_shard(config: dict, grid: Grid, cells: list, shard: int, results="results", mode: str = "fused",
                  progress: bool = True, command: list | None = None) -> dict:
    """Certify shard `shard` of the experiment's images for `cells` (which share one sigma group)."""
    shards = grid.shards()
    if not 0 <= shard < len(shards):
        raise CertificationError(f"shard {shard} out of range: this experiment has {len(shards)} shards "
                                 f"(0..{len(shards) - 1}) of {config['certify']['shard_size']} images")
    images = shards[shard]
    dataset_name = config["dataset"]["name"]
    shape, num_classes = dataset_info(dataset_name)
    dataset = load_dataset(dataset_name, config["dataset"]["root"])
    bad = [i for i in images if not 0 <= i < len(dataset)]
    if bad:
        raise CertificationError(f"image index {bad[0]} out of range: {dataset_name} has {len(dataset)} test images; "
                                 "lower dataset.images.stop in the config")

    todo = []
    for c in cells:
        rows_path, meta_path = shard_paths(results, grid.experiment, c, shard)
        wanted = _cell_identity(c, images, config)
        if rows_path.exists():
            stored = json.loads(meta_path.read_text()).get("identity", {}) if meta_path.exists() else {}
            diffs = _identity_diff(stored, wanted)
            if diffs:
                raise CertificationError(f"{rows_path} already holds finished rows computed with other settings "
                                         f"({'; '.join(diffs[:4])}); refusing to overwrite them. Move or delete "
                                         "that file to recompute, or give the new settings their own cell.")
            read_rows(rows_path)  # a corrupt finished file is an error, not a skip
            continue
        partial_meta = rows_path.with_suffix(".partial.json")
        if partial_meta.exists():
            diffs = _identity_diff(json.loads(partial_meta.read_text()), wanted)
            if diffs:
                raise CertificationError(f"{rows_path.with_suffix('.tsv.partial')} holds partial rows of other settings "
                                         f"({'; '.join(diffs[:4])}); delete it to start this cell afresh")
        todo.append((c, rows_path, meta_path, wanted))
    if not todo:
        return {"skipped": len(cells), "certified": 0}

    device = resolve_device(config["device"])
    torch.set_num_threads(config["threads"])
    todo_cells = [t[0] for t in todo]
    classifiers, purifier, clf_infos, diff_info = load_models(config, todo_cells, device, dataset_name)
    certifier = Certifier(todo_cells, classifiers, purifier, num_classes, shape,
                          batch_size=config["certify"]["batch_size"], device=device)

    writers = {}
    for c, rows_path, _, wanted in todo:
        atomic_write_json(rows_path.with_suffix(".partial.json"), wanted)
        writers[c] = DurableRowsWriter(rows_path.with_suffix(".tsv.partial"))
        if writers[c].done != images[:len(writers[c].done)]:
            raise CertificationError(f"{writers[c].path} holds images {writers[c].done[:5]}... that are not a prefix "
                                     "of this shard's images; delete it to restart the cell")
    start = min(len(w.done) for w in writers.values())
    times = []
    bar = tqdm(images[start:], desc=f"certify {cells[0].dataset} σ={cells[0].sigma:g} shard {shard} "
               f"({len(todo)} cells)", disable=not progress, mininterval=1.0)
    for pos, i in enumerate(bar, start=start):
        x, label = dataset.get(i)
        t0 = time.perf_counter()
        results_i = certifier.certify(x, i)
        elapsed = time.perf_counter() - t0
        times.append(elapsed)
        for c in todo_cells:
            if len(writers[c].done) > pos:  # written before the kill
                continue
            r = results_i[c]
            writers[c].append(format_row(i, label, r.predict, r.radius, int(r.predict == label), elapsed,
                                         r.n_a, r.n, r.p_a_lower))
            writers[c].done.append(i)
    for w in writers.values():
        w.close()

    versions, code = library_versions(), code_version()
    for c, rows_path, meta_path, wanted in todo:
        meta = {
            "identity": wanted, "cell_id": cell_id(c), "cell": c.to_dict(), "experiment": grid.experiment,
            "shard": shard, "images": images, "images_sha256": images_digest(dataset, images),
            "checkpoints": {"classifier": clf_infos[c.classifier],
                            **({"diffusion": diff_info} if c.uses_diffusion else {})},
            "batch_size": config["certify"]["batch_size"], "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "mode": mode, "cells_in_job": len(todo),
            "time_scope": "seconds per image for all cells of the job together" if len(todo) > 1 else "seconds per image",
            "seeds": {"seed": c.seed, "noise": "sha256(seed|dataset|sigma|image|stream|block) per block of "
                      f"{BLOCK} samples", "local_noise": c.local_noise},
            "versions": versions, "code": code, "command": command or sys.argv,
            "snakemake_rule": os.environ.get("DIFFSMOOTH_RULE"),
            "timing": _timing_summary(rows_path.with_suffix(".tsv.partial")),
        }
        atomic_write_json(meta_path, meta)
        os.replace(rows_path.with_suffix(".tsv.partial"), rows_path)
        rows_path.with_suffix(".partial.json").unlink(missing_ok=True)
    return {"skipped": len(cells) - len(todo), "certified": len(todo), "images": len(images) - start}


def _timing_summary(rows_path) -> dict:
    rows, _ = parse_lines(rows_path, Path(rows_path).read_text())
    t = np.array([r["time"] for r in rows]) if rows else np.zeros(1)
    return {"images": len(rows), "mean_s": float(t.mean()), "median_s": float(np.median(t)),
            "max_s": float(t.max()), "total_s": float(t.sum())}


def merge_cell(results, grid: Grid, cell: Cell) -> Path:
    """Concatenate a cell's shard rows (validated) into rows.tsv and meta.json, atomically."""
    from .rows import HEADER, atomic_write_text

    out_dir = cell_dir(results, grid.experiment, cell)
    text, metas, images = HEADER, [], []
    for k, expected in enumerate(grid.shards()):
        rows_path, meta_path = shard_paths(results, grid.experiment, cell, k)
        df = read_rows(rows_path)
        if df["idx"].tolist() != expected:
            raise CertificationError(f"{rows_path}: images {df['idx'].tolist()[:5]}... differ from shard {k}'s "
                                     f"{expected[:5]}...; re-run that shard")
        if not meta_path.exists():
            raise CertificationError(f"{meta_path} missing: re-run shard {k} of {cell_id(cell)}")
        metas.append(json.loads(meta_path.read_text()))
        text += rows_path.read_text()[len(HEADER):]
        images += expected
    shas = {json.dumps({k: v.get("sha256") for k, v in m["checkpoints"].items()}, sort_keys=True) for m in metas}
    if len(shas) != 1:
        raise CertificationError(f"shards of {cell_id(cell)} used different checkpoint files {sorted(shas)}: "
                                 "re-run the cell with one set of checkpoints")
    atomic_write_text(out_dir / "rows.tsv", text)
    first = metas[0]
    meta = {**{k: first[k] for k in ("cell_id", "cell", "experiment", "checkpoints", "batch_size", "device",
                                     "device_name", "threads", "mode", "time_scope", "seeds", "versions")},
            "images": images, "images_sha256": [m["images_sha256"] for m in metas],
            "shards": [{"shard": m["shard"], "images": len(m["images"]), "code": m["code"],
                        "command": m["command"], "snakemake_rule": m.get("snakemake_rule"),
                        "timing": m["timing"], "device": m["device"], "batch_size": m["batch_size"]} for m in metas],
            "code": first["code"], "rounding_default": grid.config["certify"]["rounding"]}
    atomic_write_json(out_dir / "meta.json", meta)
    return out_dir / "rows.tsv"
