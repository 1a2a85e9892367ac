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


def _cell_identity(cell: Cell, images, digests: dict, config: dict) -> dict:
    """Everything that must match for stored rows to be reused for this cell and these images."""
    spec = config["classifiers"][cell.classifier]
    diffusion = config["diffusion"]
    return {"cell": cell.to_dict(), "images": list(images), "noise_block": BLOCK,
            "classifier_sha256": digests[("classifier", cell.classifier)],
            "classifier_arch": spec["arch"], "normalization": spec.get("normalization"),
            "diffusion_sha256": digests[("diffusion", None)] if cell.uses_diffusion else None,
            "diffusion_flags": diffusion["flags"] if cell.uses_diffusion else None,
            "autocast": config["certify"].get("autocast", "none"),
            "channels_last": bool(config["certify"].get("channels_last", False))}


def checkpoint_digests(config: dict, cells) -> dict:
    """sha256 of every checkpoint the cells need, checked against `sha256:` in the config when given.

    Runs before any model is loaded, so a missing or changed file stops the job before it spends time."""
    from .models import sha256_file

    wanted = {("classifier", c.classifier): config["classifiers"][c.classifier] for c in cells}
    if any(c.uses_diffusion for c in cells):
        wanted[("diffusion", None)] = config["diffusion"]
    digests, by_path = {}, {}
    for key, spec in wanted.items():
        path = Path(spec["checkpoint"])
        what = f"classifier {key[1]!r}" if key[0] == "classifier" else "diffusion model"
        if not path.exists():
            raise CertificationError(f"checkpoint {path} ({what}) does not exist: " + _checkpoint_hint(spec))
        if path not in by_path:
            by_path[path] = sha256_file(path)
        digest = by_path[path]
        if spec.get("sha256") and spec["sha256"] != digest:
            raise CertificationError(f"checkpoint {path} ({what}) has sha256 {digest[:16]}…, but the config records "
                                     f"{spec['sha256'][:16]}…: the file changed or is not the published one; "
                                     "restore it (`dvc pull` / re-download) or update `sha256:` deliberately")
        digests[key] = digest
    return digests


def _identity_diff(stored: dict, wanted: dict) -> list[str]:
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if key == "cell" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: stored {str(a)[:60]}, now {str(b)[:60]}")
    return diffs


def load_models(config: dict, cells, device, dataset: str, digests: dict | None = None):
    """Classifiers named by the cells and, when needed, the purifier for the group's sigma (strict loads).

    `digests` (from checkpoint_digests) saves hashing large files twice."""
    from .models import CheckpointError, load_classifier, load_diffusion

    check_classifier_specs(config, cells, dataset)  # before reading any file
    classifiers, infos = {}, {}
    for name in sorted({c.classifier for c in cells}):
        spec = config["classifiers"][name]
        path = Path(spec["checkpoint"])
        if not path.exists():
            raise CertificationError(f"classifier checkpoint {path} (classifier {name!r}) does not exist: "
                                     + _checkpoint_hint(spec))
        try:
            model, info = load_classifier(path, dataset, arch=spec["arch"], normalization=spec.get("normalization"),
                                          map_location=device, compute_sha256=digests is None)
        except CheckpointError as e:
            raise CertificationError(f"classifier {name!r} (config `classifiers: {name}:`): {e}\n"
                                     f"Fix: set `arch:`/`normalization:` of classifiers/{name} to how the checkpoint "
                                     f"was trained, or point `checkpoint:` at the right file ({path}).") from None
        _refuse_non_finite(model, path, f"classifier {name!r}", spec)
        if digests is not None:
            info["sha256"] = digests[("classifier", name)]
        classifiers[name] = speed_settings(model, device, config)
        infos[name] = info
    purifier, dinfo = None, None
    if any(c.uses_diffusion for c in cells):
        spec = config["diffusion"]
        path = Path(spec["checkpoint"])
        if not path.exists():
            raise CertificationError(f"diffusion checkpoint {path} does not exist: " + _checkpoint_hint(spec))
        try:
            eps_model, dinfo = load_diffusion(path, flags=spec["flags"], map_location=device,
                                              compute_sha256=digests is None)
        except CheckpointError as e:
            raise CertificationError(f"diffusion model (config `diffusion:`): {e}\nFix: set `diffusion: flags:` to "
                                     f"the flags the model was trained with, or point `checkpoint:` at the right "
                                     f"file ({path}).") from None
        _refuse_non_finite(eps_model, path, "diffusion model", spec)
        if digests is not None:
            dinfo["sha256"] = digests[("diffusion", None)]
        schedule = schedule_from_flags(spec["flags"])
        purifier = OneShotPurifier(speed_settings(eps_model, device, config), schedule, cells[0].sigma)
        dinfo = {**dinfo, "t_star": purifier.t_star, "model_time": purifier.model_time}
    return classifiers, purifier, infos, dinfo


def speed_settings(model, device, config: dict):
    """Optional autocast (bf16/fp16) and channels-last from `certify:`; off by default (exact fp32)."""
    from .models import prepare_for_inference

    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config["certify"].get("autocast", "none")]
    return prepare_for_inference(model, device, channels_last=bool(config["certify"].get("channels_last", False)),
                                 autocast_dtype=dtype)


def check_classifier_specs(config: dict, cells, dataset: str) -> None:
    """The config's arch / normalization of every classifier the cells use exist and fit the dataset
    (no file is read: this runs before any work, even for cells whose rows are already complete)."""
    from .models.zoo import resolve_normalization

    for name in sorted({c.classifier for c in cells}):
        spec = config["classifiers"][name]
        try:
            resolve_normalization(spec["arch"], dataset, spec.get("normalization"))
        except ValueError as e:
            raise CertificationError(f"classifiers/{name} in the config: {e}; set `arch:` (and `normalization:`) "
                                     f"of classifiers/{name} to the network its checkpoint holds") from None


def _refuse_non_finite(model, path, what: str, spec: dict) -> None:
    """A checkpoint with NaN/Inf weights would only produce NaN votes: stop before any row is written."""
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CertificationError(f"checkpoint {path} ({what}) has NaN/Inf values in {len(bad)} tensor(s) "
                                 f"({', '.join(bad[:5])}): training diverged or the file is damaged; nothing was "
                                 "certified. " + (f"Delete {path} and retrain it (`snakemake -c2 all_tables` retrains "
                                                  "missing checkpoints)" if spec.get("train") else
                                                  "Fetch the file again (`dvc pull` / re-download) and compare "
                                                  "its sha256"))


def _read_json(path: Path, fix: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CertificationError(f"{path} is not valid JSON ({e}): the file is damaged; {fix}") from None


def _checkpoint_hint(spec: dict) -> str:
    if spec.get("train"):
        return "it is trained by the pipeline: run `snakemake -c2 all_tables` (or the train rules) first"
    src = f" (public source: {spec['source']})" if spec.get("source") else ""
    return f"the paper's checkpoints are user-supplied: download it and place it there{src}, or `dvc pull`"


def _prepare_shard(config: dict, grid: Grid, cells: list, shard: int, results, dataset=None,
                   digests: dict | None = None):
    """Every check that can fail before work, in order; reads files, writes nothing.

    Returns (images, dataset, digests, todo) with todo = [(cell, rows_path, meta_path, identity)] of the
    cells whose rows for this shard are not complete yet."""
    shards = grid.shards()
    if not shards:
        sel = config["dataset"]["images"]
        raise CertificationError(f"dataset.images selects no image (start={sel.get('start', 0)}, stop={sel['stop']}, "
                                 f"skip={sel.get('skip', 1)}): set stop above start in the config")
    if not 0 <= shard < len(shards):
        raise CertificationError(f"shard {shard} out of range: this experiment has {len(shards)} shards "
                                 f"(0..{len(shards) - 1}) of {config['certify']['shard_size']} images; "
                                 f"pass --shard between 0 and {len(shards) - 1}, or omit --shard to run them all")
    images = shards[shard]
    dataset_name = config["dataset"]["name"]
    dataset_info(dataset_name)
    if dataset is None:
        dataset = load_dataset(dataset_name, config["dataset"]["root"])
    selection = grid.images()  # the whole selection, so no shard starts that a later one would refute
    bad = [i for i in selection if not 0 <= i < len(dataset)]
    if bad:
        sel = config["dataset"]["images"]
        raise CertificationError(f"image index {bad[0]} out of range: {dataset_name} has {len(dataset)} test images "
                                 f"(0..{len(dataset) - 1}) in {config['dataset']['root']}, but dataset.images selects "
                                 f"start={sel.get('start', 0)}, stop={sel['stop']}; set dataset.images.stop to at "
                                 f"most {len(dataset)} in the config")
    check_classifier_specs(config, cells, dataset_name)
    resolve_device(config["device"])
    if digests is None:
        digests = checkpoint_digests(config, cells)
    todo = []
    for c in cells:
        rows_path, meta_path = shard_paths(results, grid.experiment, c, shard)
        wanted = _cell_identity(c, images, digests, config)
        if rows_path.exists():
            stored = (_read_json(meta_path, f"delete it and {rows_path.name}, then re-run shard {shard}")
                      .get("identity", {}) if meta_path.exists() else {})
            diffs = _identity_diff(stored, wanted)
            if diffs:
                raise CertificationError(f"{rows_path} already holds finished rows computed with other settings "
                                         f"({'; '.join(diffs[:4])}); refusing to overwrite them. Move or delete "
                                         "that file to recompute, give the new settings their own cell, or, if a "
                                         "checkpoint changed by accident, restore it.")
            read_rows(rows_path)  # a corrupt finished file is an error, not a skip
            continue
        partial_meta = rows_path.with_suffix(".partial.json")
        partial = rows_path.with_suffix(".tsv.partial")
        if partial_meta.exists():
            diffs = _identity_diff(_read_json(partial_meta, f"delete it and {partial.name} to start this "
                                              "cell afresh"), wanted)
            if diffs:
                raise CertificationError(f"{partial} holds partial rows of other settings "
                                         f"({'; '.join(diffs[:4])}); delete it to start this cell afresh")
        if partial.exists():  # what DurableRowsWriter will resume from (a torn last line is dropped there)
            done = [r["idx"] for r in parse_lines(partial, partial.read_text(), allow_torn_tail=True)[0]]
            if done != images[:len(done)]:
                raise CertificationError(f"{partial} holds images {done[:5]}... that are not a prefix of shard "
                                         f"{shard}'s images {images[:5]}...; delete it to restart the cell")
        todo.append((c, rows_path, meta_path, wanted))
    return images, dataset, digests, todo


def validate_shards(config: dict, grid: Grid, cells: list, shards, results="results") -> tuple:
    """Run the pre-work checks of every shard a command will certify, before the first one starts.

    Returns (dataset, digests) so certify_shard neither re-reads the data nor re-hashes the checkpoints."""
    dataset, digests = None, None
    for k in shards:
        _, dataset, digests, _ = _prepare_shard(config, grid, cells, k, results, dataset, digests)
    return dataset, digests


def certify_shard(config: dict, grid: Grid, cells: list, shard: int, results="results", mode: str = "fused",
                  progress: bool = True, command: list | None = None, dataset=None, digests: dict | None = None) -> dict:
    """Certify shard `shard` of the experiment's images for `cells` (which share one sigma group).

    `dataset` and `digests` (from validate_shards) spare reloading the data and re-hashing checkpoints."""
    images, dataset, digests, todo = _prepare_shard(config, grid, cells, shard, results, dataset, digests)
    dataset_name = config["dataset"]["name"]
    shape, num_classes = dataset_info(dataset_name)
    if not todo:
        return {"skipped": len(cells), "certified": 0}

    device = resolve_device(config["device"])
    torch.set_num_threads(config["threads"])
    todo_cells = [t[0] for t in todo]
    classifiers, purifier, clf_infos, diff_info = load_models(config, todo_cells, device, dataset_name, digests)
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
    bar = tqdm(images[start:], desc=f"certify {cells[0].dataset} σ={cells[0].sigma:g} shard {shard} "
               f"({len(todo)} cells)", disable=not progress, mininterval=1.0)
    for pos, i in enumerate(bar, start=start):
        x, label = dataset.get(i)
        t0 = time.perf_counter()
        results_i = certifier.certify(x, i)
        elapsed = time.perf_counter() - t0
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


_MERGED_META_KEYS = ("cell_id", "cell", "experiment", "checkpoints", "batch_size", "device", "device_name", "threads",
                     "mode", "time_scope", "seeds", "versions", "images", "images_sha256", "shard", "code", "command",
                     "timing")


def prepare_merge(results, grid: Grid, cell: Cell) -> tuple[Path, str, dict]:
    """Read and validate a cell's shard rows and metadata; returns (cell dir, rows text, meta). Writes nothing."""
    from .rows import HEADER

    out_dir = cell_dir(results, grid.experiment, cell)
    text, metas, images = HEADER, [], []
    for k, expected in enumerate(grid.shards()):
        rows_path, meta_path = shard_paths(results, grid.experiment, cell, k)
        if not rows_path.exists():
            raise CertificationError(f"rows file {rows_path} does not exist: certify shard {k} of {cell_id(cell)} "
                                     f"first (`diffsmooth certify ... --shard {k}`, or let Snakemake run it)")
        df = read_rows(rows_path)
        if df["idx"].tolist() != expected:
            raise CertificationError(f"{rows_path}: images {df['idx'].tolist()[:5]}... differ from shard {k}'s "
                                     f"{expected[:5]}...; re-run that shard")
        if not meta_path.exists():
            raise CertificationError(f"{meta_path} missing: re-run shard {k} of {cell_id(cell)}")
        meta_k = _read_json(meta_path, f"delete it and {rows_path.name}, then re-run shard {k} of {cell_id(cell)}")
        missing = [key for key in _MERGED_META_KEYS if key not in meta_k]
        if missing:
            raise CertificationError(f"{meta_path} lacks {', '.join(missing)}: it was not written by a finished "
                                     f"certification; delete it and {rows_path.name}, then re-run shard {k}")
        metas.append(meta_k)
        text += rows_path.read_text()[len(HEADER):]
        images += expected
    shas = {json.dumps({k: v.get("sha256") for k, v in m["checkpoints"].items()}, sort_keys=True) for m in metas}
    if len(shas) != 1:
        raise CertificationError(f"shards of {cell_id(cell)} used different checkpoint files {sorted(shas)}: "
                                 "re-run the cell with one set of checkpoints")
    first = metas[0]
    meta = {**{k: first[k] for k in ("cell_id", "cell", "experiment", "checkpoints", "batch_size", "device",
                                     "device_name", "threads", "mode", "time_scope", "seeds", "versions")},
            "images": images, "images_sha256": [m["images_sha256"] for m in metas],
            "shards": [{"shard": m["shard"], "images": len(m["images"]), "code": m["code"],
                        "command": m["command"], "snakemake_rule": m.get("snakemake_rule"),
                        "timing": m["timing"], "device": m["device"], "batch_size": m["batch_size"]} for m in metas],
            "code": first["code"], "rounding_default": grid.config["certify"]["rounding"]}
    return out_dir, text, meta


def write_merge(out_dir: Path, text: str, meta: dict) -> Path:
    from .rows import atomic_write_text

    atomic_write_text(out_dir / "rows.tsv", text)
    atomic_write_json(out_dir / "meta.json", meta)
    return out_dir / "rows.tsv"


def merge_cell(results, grid: Grid, cell: Cell) -> Path:
    """Concatenate a cell's shard rows (validated) into rows.tsv and meta.json, atomically."""
    return write_merge(*prepare_merge(results, grid, cell))
