"""A merged rows.tsv against its shard files, and each rows file against the sha256 its job recorded in the
pipeline's summaries (`groups/<group>/merged-<key>.json`, `groups/<group>/shards/NNNN-<key>.json`).
A check that cannot run (a summary deleted, a shard missing, a per-cell job) is skipped with that reason."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..cell import Cell, cell_id, group_id
from ..grid import Grid, group_summary_path
from ..paths import Layout
from ..rows import HEADER
from .checkpoints import file_sha256
from .checks import MISMATCH, Checks
from .indices import compact_indices


def _recorded_sha(summary: Path, cell: Cell, rows_path: Path):
    """The sha256 a pipeline summary records for a rows file: (sha256 or None, why None)."""
    if not summary.is_file():
        return None, f"{summary} does not exist (deleted, or written for another grid)"
    try:
        data = json.loads(summary.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{summary} is not valid JSON"
    for f in data.get("files", []) if isinstance(data, dict) else []:
        if f.get("cell_id") == cell_id(cell) and Path(f.get("rows", "")).resolve() == rows_path.resolve():
            return f.get("sha256"), ""
    return None, f"{summary} does not list {rows_path}"


def summary_check(checks: Checks, name: str, results: Path, grid: Grid, cell: Cell, rows_path: Path,
                   shard: int | None, mode: str | None, what: str) -> str | None:
    """Compare a rows file with the sha256 its pipeline summary recorded; a skip always says why."""
    if mode != "fused":
        checks.skip(name, f"{what} was written by a {mode or 'unknown-mode'} job, which writes no sha256 summary")
        return None
    summary = Path(group_summary_path(grid, group_id(cell), shard, results=str(results)))
    recorded, why = _recorded_sha(summary, cell, rows_path)
    if recorded is None:
        checks.skip(name, f"{why}: {what} was not compared with the sha256 the job recorded; "
                    "`snakemake -c2 all_tables --configfile <config>` rebuilds the summary")
        return None
    now = file_sha256(rows_path)
    checks.ok_if(name, recorded == now, f"{what}: sha256 {now[:16]}... as in {summary}",
                 f"{rows_path} was modified after the job wrote it: sha256 {now}, {summary} recorded {recorded}")
    return recorded


def shard_checks(results: Path, grid: Grid, layout: Layout, cell: Cell, meta: dict, rows_path: Path,
            checks: Checks) -> list[dict]:
    """Each shard's rows against its summary, and the merged rows against the shards concatenated."""
    images = list(meta.get("images", []))
    infos, concat, missing, pos = [], HEADER, [], 0
    for k, sh in enumerate(meta.get("shards", [])):
        number, count = sh.get("shard", k), sh.get("images", 0)
        imgs, pos = images[pos:pos + count], pos + count
        tsv, js = layout.shard_rows(cell, number), layout.shard_meta(cell, number)
        info = {"shard": number, "images": imgs, "images_compact": compact_indices(imgs), "rows": str(tsv),
                "rows_sha256": file_sha256(tsv), "pipeline_sha256": None, "snakemake_rule": sh.get("snakemake_rule"),
                "command": [str(c) for c in sh.get("command") or []],
                "command_text": shlex.join(map(str, sh.get("command") or [])),
                "code": sh.get("code") or {}, "timing": sh.get("timing") or {}, "cells_in_job": None,
                "mode": meta.get("mode"), "noise_block": None}
        if js.is_file():
            try:
                sj = json.loads(js.read_text())
                info["cells_in_job"], info["mode"] = sj.get("cells_in_job"), sj.get("mode", info["mode"])
                info["noise_block"] = (sj.get("identity") or {}).get("noise_block")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                checks.skip(f"shard{number}.meta", f"{js} is not a JSON object: shard {number}'s job mode and "
                            "cell count are unknown")
        else:
            checks.skip(f"shard{number}.meta", f"{js} does not exist: shard {number}'s job mode and cell count are "
                        f"unknown; re-run shard {number} to restore it")
        if tsv.is_file():
            concat += tsv.read_text()[len(HEADER):]
            info["pipeline_sha256"] = summary_check(checks, f"shard{number}.pipeline_sha256", results, grid, cell,
                                                     tsv, number, info["mode"], f"shard {number}'s rows")
        else:
            missing.append(str(tsv))
            checks.add(f"shard{number}.rows", MISMATCH, f"{tsv} is missing: restore it or re-run shard {number} "
                       f"(`diffsmooth certify --configfile <config> --cell {cell_id(cell)} --shard {number}`)")
        infos.append(info)
    if missing:
        checks.skip("rows.shards", f"shard file(s) {', '.join(missing)} missing: rows.tsv was not compared with "
                    "its shards")
    elif not infos:
        checks.skip("rows.shards", "meta.json lists no shards: rows.tsv was not compared with shard files")
    else:
        checks.ok_if("rows.shards", concat == rows_path.read_text(),
                     f"rows.tsv equals its {len(infos)} shard file(s) concatenated",
                     "rows.tsv differs from the concatenation of its shard files (one of them was edited)")
    return infos
