"""Merging a cell's shard rows into its rows.tsv and meta.json (validated, atomic). No torch: the merge
jobs are cheap and parse fast.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cell import Cell, cell_id
from .grid import Grid
from .paths import META, ROWS, Layout, contained
from .rows import HEADER, atomic_write_json, atomic_write_text, read_json_object, read_rows, read_text


class MergeError(RuntimeError):
    """Shards that cannot be merged; the message names the file and the fix."""


def cell_dir(results, experiment: str, cell: Cell) -> Path:
    return contained(Layout(results, experiment).cell_dir(cell), results)


def shard_paths(results, experiment: str, cell: Cell, shard: int) -> tuple[Path, Path]:
    layout = Layout(results, experiment)
    return contained(layout.shard_rows(cell, shard), results), contained(layout.shard_meta(cell, shard), results)


def _read_json(path, fix: str) -> dict:
    return read_json_object(path, fix, MergeError)


_MERGED_META_KEYS = ("cell_id", "cell", "experiment", "checkpoints", "batch_size", "device", "device_name", "threads",
                     "mode", "time_scope", "seeds", "versions", "images", "images_sha256", "shard", "code", "command",
                     "timing", "settings")


def prepare_merge(results, grid: Grid, cell: Cell) -> tuple[Path, str, dict]:
    """Read and validate a cell's shard rows and metadata; returns (cell dir, rows text, meta). Writes nothing."""
    out_dir = cell_dir(results, grid.experiment, cell)
    text, metas, images = HEADER, [], []
    for k, expected in enumerate(grid.shards()):
        rows_path, meta_path = shard_paths(results, grid.experiment, cell, k)
        if not rows_path.exists():
            raise MergeError(f"rows file {rows_path} does not exist: certify shard {k} of {cell_id(cell)} "
                                     f"first (`diffsmooth certify ... --shard {k}`, or let Snakemake run it)")
        df = read_rows(rows_path)
        if df["idx"].tolist() != expected:
            raise MergeError(f"{rows_path}: images {df['idx'].tolist()[:5]}... differ from shard {k}'s "
                                     f"{expected[:5]}...; re-run that shard")
        if not meta_path.exists():
            raise MergeError(f"{meta_path} missing: re-run shard {k} of {cell_id(cell)}")
        meta_k = _read_json(meta_path, f"delete it and {rows_path.name}, then re-run shard {k} of {cell_id(cell)}")
        missing = [key for key in _MERGED_META_KEYS if key not in meta_k]
        if missing:
            raise MergeError(f"{meta_path} lacks {', '.join(missing)}: it was not written by a finished "
                                     f"certification; delete it and {rows_path.name}, then re-run shard {k}")
        metas.append(meta_k)
        text += read_text(rows_path)[len(HEADER):]
        images += expected
    shas = {json.dumps({k: v.get("sha256") for k, v in m["checkpoints"].items()}, sort_keys=True) for m in metas}
    if len(shas) != 1:
        raise MergeError(f"shards of {cell_id(cell)} used different checkpoint files {sorted(shas)}: "
                                 "re-run the cell with one set of checkpoints")
    first = metas[0]
    meta = {**{k: first[k] for k in ("cell_id", "cell", "experiment", "checkpoints", "batch_size", "device",
                                     "device_name", "threads", "mode", "time_scope", "seeds", "versions", "settings")},
            "images": images, "images_sha256": [m["images_sha256"] for m in metas],
            "shards": [{"shard": m["shard"], "images": len(m["images"]), "code": m["code"],
                        "command": m["command"], "snakemake_rule": m.get("snakemake_rule"),
                        "timing": m["timing"], "device": m["device"], "batch_size": m["batch_size"]} for m in metas],
            "code": first["code"], "rounding_default": grid.settings.rounding}
    return out_dir, text, meta


def write_merge(out_dir: Path, text: str, meta: dict) -> Path:
    atomic_write_text(out_dir / ROWS, text)
    atomic_write_json(out_dir / META, meta)
    return out_dir / ROWS
