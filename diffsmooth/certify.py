"""Certification jobs: one shard of images for one cell (per-cell mode) or for every cell of a
(dataset, sigma) group (fused mode), with durable per-image rows, resume after a kill, metadata for
audits, and merging of shards into a cell's rows.

A finished cell is never recomputed or overwritten: its rows are skipped when the stored parameters
match, and the job refuses (naming the differences) when they do not.
"""
from __future__ import annotations

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
from .cell import CERTIFY_VERSION
from .config import Settings
from .data import PREPROCESSING, dataset_info, images_digest, load_dataset
from .grid import REPO_ROOT, Grid, cell_id
from .noise import BLOCK
from .merge import cell_dir, shard_paths  # noqa: F401  (re-exported for the audit)
from .purifier import OneShotPurifier
from .rows import (DurableRowsWriter, ShardLock, atomic_write_json, format_row, parse_lines, read_json_object,
                   read_rows, read_text, sha256_file)
from .schedules import schedule_from_flags
from .smoothing import Cell, Certifier


class CertificationError(RuntimeError):
    """Refused before or during work; the message names the problem and the fix."""


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


def _cell_identity(cell: Cell, images, images_sha256: str, digests: dict, config: dict) -> dict:
    """Everything that must match for stored rows to be reused for this cell and these images: the
    parameters, which images and what they are (content digest after preprocessing), the checkpoints,
    the speed settings and the certification code's version."""
    spec = config["classifiers"][cell.classifier]
    diffusion = config["diffusion"]
    settings = Settings.of(config)
    return {"cell": cell.to_dict(), "images": list(images), "images_sha256": images_sha256,
            "preprocessing": PREPROCESSING[cell.dataset], "certify_version": CERTIFY_VERSION, "noise_block": BLOCK,
            "classifier_sha256": digests[("classifier", cell.classifier)],
            "classifier_arch": spec["arch"], "normalization": spec.get("normalization"),
            "diffusion_sha256": digests[("diffusion", None)] if cell.uses_diffusion else None,
            "diffusion_flags": diffusion["flags"] if cell.uses_diffusion else None,
            "precision": settings.precision, "compile": settings.compile, "channels_last": settings.channels_last}


def checkpoint_digests(config: dict, cells) -> dict:
    """sha256 of every checkpoint the cells need, checked against `sha256:` in the config when given.

    Runs before any model is loaded, so a missing or changed file stops the job before it spends time."""
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
                                          map_location=device, compute_sha256=digests is None,
                                          trust_pickle=spec["trust_pickle"])
        except CheckpointError as e:
            raise CertificationError(f"classifier {name!r} (config `classifiers: {name}:`): {e}\n"
                                     f"Fix: set `arch:`/`normalization:` of classifiers/{name} to how the checkpoint "
                                     f"was trained, or point `checkpoint:` at the right file ({path}).") from None
        _refuse_non_finite(model, path, f"classifier {name!r}", spec)
        if digests is not None:
            info["sha256"] = digests[("classifier", name)]
        classifiers[name] = speed_settings(model, device, **Settings.of(config).speed)
        infos[name] = info
    purifier, dinfo = None, None
    if any(c.uses_diffusion for c in cells):
        spec = config["diffusion"]
        path = Path(spec["checkpoint"])
        if not path.exists():
            raise CertificationError(f"diffusion checkpoint {path} does not exist: " + _checkpoint_hint(spec))
        try:
            eps_model, dinfo = load_diffusion(path, flags=spec["flags"], map_location=device,
                                              compute_sha256=digests is None, trust_pickle=spec["trust_pickle"])
        except CheckpointError as e:
            raise CertificationError(f"diffusion model (config `diffusion:`): {e}\nFix: set `diffusion: flags:` to "
                                     f"the flags the model was trained with, or point `checkpoint:` at the right "
                                     f"file ({path}).") from None
        _refuse_non_finite(eps_model, path, "diffusion model", spec)
        if digests is not None:
            dinfo["sha256"] = digests[("diffusion", None)]
        schedule = schedule_from_flags(spec["flags"])
        purifier = OneShotPurifier(speed_settings(eps_model, device, **Settings.of(config).speed), schedule,
                                   cells[0].sigma)
        dinfo = {**dinfo, "t_star": purifier.t_star, "model_time": purifier.model_time}
    return classifiers, purifier, infos, dinfo


def speed_settings(model, device, precision: str = "fp32", compile: bool = False, channels_last: bool = False):
    """`certify.precision` (fp32 strict, tf32, bf16 autocast), `certify.compile` and channels-last
    (`Settings.speed` of the config gives all three).

    fp32 without compile keeps the reference op order (rows byte-identical to the reference path on CPU);
    any other setting also switches on SDPA attention and BatchNorm folding, which change float rounding
    only (tests/test_fastpath.py measures the label agreement)."""
    from .models import prepare_for_inference

    fast = compile or precision != "fp32"
    return prepare_for_inference(model, device, channels_last=channels_last, precision=precision, sdpa=fast,
                                 compile=compile, fold_batchnorm=fast)


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
    return read_json_object(path, fix, CertificationError)


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
    resolve_device(Settings.of(config).device)
    if digests is None:
        digests = checkpoint_digests(config, cells)
    images_sha256 = images_digest(dataset, images)
    todo = []
    for c in cells:
        rows_path, meta_path = shard_paths(results, grid.experiment, c, shard)
        wanted = _cell_identity(c, images, images_sha256, digests, config)
        if rows_path.exists():
            if not meta_path.exists():
                raise CertificationError(f"{rows_path} holds finished rows but their metadata {meta_path.name} is "
                                         "missing (deleted?), so nobody can tell what they were computed with; "
                                         f"delete {rows_path.name} to recompute shard {shard} of this cell")
            stored = _read_json(meta_path, f"delete it and {rows_path.name}, then re-run shard {shard}"
                                ).get("identity", {})
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
            done = [r["idx"] for r in parse_lines(partial, read_text(partial), allow_torn_tail=True)[0]]
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
    if not todo:
        return {"skipped": len(cells), "certified": 0}
    dataset_name = config["dataset"]["name"]
    shape, num_classes = dataset_info(dataset_name)
    settings = Settings.of(config)
    device = resolve_device(settings.device)
    torch.set_num_threads(settings.threads)
    todo_cells = [t[0] for t in todo]
    classifiers, purifier, clf_infos, diff_info = load_models(config, todo_cells, device, dataset_name, digests)
    certifier = Certifier(todo_cells, classifiers, purifier, num_classes, shape,
                          batch_size=settings.batch_size, device=device)
    # One writer per shard: two writers appending to one .partial file would duplicate rows. Taken after every
    # check and model load, so a refused job writes nothing, not even a lock file.
    locks = [ShardLock(rows_path.with_suffix(".lock")) for _, rows_path, _, _ in todo]
    try:
        for lock in locks:
            lock.acquire()
        # checked again under the locks: a writer that held them may have finished some cells meanwhile (the
        # certifier still evaluates them: a cell's rows do not depend on the other cells it is computed with)
        images, dataset, digests, todo = _prepare_shard(config, grid, cells, shard, results, dataset, digests)
        if not todo:
            return {"skipped": len(cells), "certified": 0}
        return _write_rows(grid, cells, shard, images, dataset, todo, certifier, device, config,
                           clf_infos, diff_info, mode, progress, command)
    finally:
        for lock in locks:
            lock.release()


def _write_rows(grid, cells, shard, images, dataset, todo, certifier, device, config, clf_infos, diff_info, mode,
                progress, command) -> dict:
    """Certify the shard's images not written yet, append each image's rows durably, then finish the shards."""
    todo_cells = [t[0] for t in todo]
    writers = {}
    for c, rows_path, _, wanted in todo:
        atomic_write_json(rows_path.with_suffix(".partial.json"), wanted)
        writers[c] = DurableRowsWriter(rows_path.with_suffix(".tsv.partial"))
        if writers[c].done != images[:len(writers[c].done)]:
            raise CertificationError(f"{writers[c].path} holds images {writers[c].done[:5]}... that are not a prefix "
                                     "of this shard's images; delete it to restart the cell")
    start = min(len(w.done) for w in writers.values())
    # Progress per batch of noisy samples, with an ETA: at the paper's settings one image takes minutes. In a
    # job log (not a terminal) a line every 30 s.
    bar = tqdm(total=(len(images) - start) * certifier.samples_per_image, unit="sample", unit_scale=True,
               desc=f"certify {cells[0].dataset} σ={cells[0].sigma:g} shard {shard} ({len(todo)} cells, "
               f"{len(images) - start} images)", disable=not progress, file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, ascii=not sys.stderr.isatty())
    certifier.on_batch = bar.update
    for pos, i in enumerate(images[start:], start=start):
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
        bar.set_postfix_str(f"image {pos + 1}/{len(images)}", refresh=False)
    bar.close()
    certifier.on_batch = None
    for w in writers.values():
        w.close()

    versions, code = library_versions(), code_version()
    for c, rows_path, meta_path, wanted in todo:
        meta = {
            "identity": wanted, "cell_id": cell_id(c), "cell": c.to_dict(), "experiment": grid.experiment,
            "shard": shard, "images": images, "images_sha256": wanted["images_sha256"],
            "settings": recorded_settings(config, wanted),
            "checkpoints": {"classifier": clf_infos[c.classifier],
                            **({"diffusion": diff_info} if c.uses_diffusion else {})},
            "batch_size": Settings.of(config).batch_size, "device": str(device),
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


def recorded_settings(config: dict, identity: dict) -> dict:
    """Every setting that can change a number, as the job used it (the audit shows these, not today's config)."""
    keys = ("precision", "compile", "channels_last", "noise_block", "certify_version", "preprocessing")
    s = Settings.of(config)
    return {**{k: identity.get(k) for k in keys}, "batch_size": s.batch_size, "device": s.device,
            "rounding": s.rounding, "local_noise": config["certify"]["local_noise"]}


def _timing_summary(rows_path) -> dict:
    rows, _ = parse_lines(rows_path, read_text(rows_path))
    t = np.array([r["time"] for r in rows]) if rows else np.zeros(1)
    return {"images": len(rows), "mean_s": float(t.mean()), "median_s": float(np.median(t)),
            "max_s": float(t.max()), "total_s": float(t.sum())}
