"""Provenance of one cell: its rows against their shards, the pipeline's sha256 summaries and CERTIFY's
statistics; the data subset; the checkpoints; code, libraries and the recorded settings; the commands.

Imported cells (rows from a user's certification log, `meta["imported"]`) have no shards, summaries,
checkpoints or seeds: those checks are skipped with that reason, the log's sha256 is checked, and the
rows are re-checked as far as their columns allow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import statistics
from ..cell import Cell, cell_id, group_id
from ..grid import Grid, group_summary_path, max_certifiable_radius
from ..paths import Layout
from ..tables import RowCache
from .checkpoints import audit_checkpoints, file_sha256
from .checks import INFO, MISMATCH, AuditError, Checks
from .consistency import statistics_problems
from .indices import compact_indices
from .shards import shard_checks, summary_check

# Settings that can change a number, as the merged meta.json records them (`meta["settings"]`).
SETTINGS = ("precision", "autocast", "compile", "channels_last", "batch_size", "device", "noise_block", "rounding",
            "local_noise", "certify_version", "code_version", "preprocessing")


def load_meta(layout: Layout, cell: Cell) -> dict:
    """meta.json of a merged or imported cell (its rows.tsv present too); AuditError naming the fix otherwise."""
    cid = cell_id(cell)
    rows_path, meta_path = layout.rows(cell), layout.meta(cell)
    for p in (rows_path, meta_path):
        if not p.is_file():
            raise AuditError(f"{p} does not exist: cell {cid} has not been certified and merged, or imported "
                             "(run `snakemake -c2 all_tables --configfile <config>`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditError(f"{meta_path} is not valid JSON ({e}): delete it and rows.tsv, then re-run the merge "
                         "(or the import)") from None
    if not isinstance(meta, dict):
        raise AuditError(f"{meta_path} holds a JSON {type(meta).__name__}, not an object: delete it and rows.tsv, "
                         "then re-run the merge (or the import)")
    return meta


def recorded_settings(config: dict, meta: dict, checks: Checks) -> dict:
    """The settings recorded when the rows were computed (not the config's current ones)."""
    rec = meta.get("settings")
    rec = rec if isinstance(rec, dict) else {}
    values = {k: rec[k] for k in SETTINGS if k in rec}
    values.update({k: v for k, v in rec.items() if k not in values})
    certify_now = config.get("certify", {})
    changed = [f"{k}: recorded {v!r}, the config now says {certify_now[k]!r}" for k, v in values.items()
               if k in certify_now and certify_now[k] != v]
    if changed:
        checks.add("settings.changed", INFO, "settings differ from the config's (a re-run would use the config's): "
                   + "; ".join(changed))
    # the same setting under another name: older files record `autocast`, newer ones `certify_version`
    older = {"precision": "autocast", "autocast": "precision", "code_version": "certify_version",
             "certify_version": "code_version"}
    return {"recorded": bool(rec), "values": values,
            "missing": [k for k in SETTINGS if k not in values and older.get(k) not in values]}


def _imported(meta: dict, grid: Grid, cell: Cell, checks: Checks) -> dict:
    info = meta["imported"] if isinstance(meta["imported"], dict) else {"source": str(meta["imported"])}
    source = str(info.get("source") or "")
    path = Path(source)
    now = file_sha256(path) if source and path.is_file() else None
    out = {**info, "source": source, "sha256": info.get("sha256"), "format": info.get("format"),
           "current_sha256": now, "matches": None if now is None else now == info.get("sha256")}
    if now is None:
        checks.skip("imported.sha256", f"the log {source or '(none recorded)'} is not here (paths are relative to "
                    "the directory the workflow runs in): its sha256 was not compared with the recorded one")
    else:
        checks.ok_if("imported.sha256", out["matches"], f"{source}: sha256 {now[:16]}... as recorded at import",
                     f"{source} changed since it was imported: sha256 {now}, recorded {info.get('sha256')}; "
                     "re-import it (`diffsmooth import --configfile <config>`) if the new log is the one to trust")
    entry = getattr(grid, "imported", {}).get(cell_id(cell))
    if entry is not None and str(entry.log) != source:
        checks.add("imported.source", INFO, f"imported from {source}; the config now imports it from {entry.log}")
    return out


def _data_subset(config: dict, meta: dict, rows, shard_infos: list, why_not: str, checks: Checks):
    """(data section, the dataset or None): the images' sha256 per shard, or an imported log's labels."""
    from ..data import images_digest, load_dataset

    images_meta = list(meta.get("images", []))
    dataset_name = config["dataset"]["name"]
    data = {"dataset": dataset_name, "root": config["dataset"]["root"], "count": len(images_meta),
            "images_compact": compact_indices(images_meta), "images": images_meta, "shards": []}
    dataset = None
    try:
        dataset = load_dataset(dataset_name, config["dataset"]["root"])
    except (FileNotFoundError, ValueError) as e:
        checks.skip("data.images_sha256", f"dataset not available here: {e}")
    if why_not and dataset is None:
        checks.skip("data.labels", "dataset not available here: the rows' labels were not compared with it")
    elif why_not:
        checks.skip("data.images_sha256", f"{why_not}: the log records no digest of the images")
        wrong = []
        for r in rows.itertuples(index=False):
            try:
                truth = int(dataset.get(int(r.idx))[1])
            except IndexError:
                truth = f"no image {int(r.idx)} ({len(dataset)} test images)"
            if truth != int(r.label):
                wrong.append((int(r.idx), int(r.label), truth))
        checks.ok_if("data.labels", not wrong, f"every row's label is the {dataset_name} test label of its image",
                     "labels differ from the dataset's: " + "; ".join(
                         f"image {i}: label {a}, the dataset says {b}" for i, a, b in wrong[:5]))
    else:
        stored_digests = list(meta.get("images_sha256", []))
        for k, info in enumerate(shard_infos):
            stored = stored_digests[k] if k < len(stored_digests) else None
            now = images_digest(dataset, info["images"]) if dataset is not None else None
            data["shards"].append({"shard": info["shard"], "images_compact": info["images_compact"],
                                   "stored_sha256": stored, "current_sha256": now,
                                   "matches": None if now is None else now == stored})
        if dataset is not None:
            bad = [s for s in data["shards"] if not s["matches"]]
            checks.ok_if("data.images_sha256", not bad,
                         f"sha256 of the {len(images_meta)} images and labels recomputed = stored, per shard",
                         "the data subset changed: " + "; ".join(
                             f"shard {s['shard']} ({s['images_compact']}) stored {s['stored_sha256']}, now "
                             f"{s['current_sha256']}" for s in bad))
    return data, dataset


def audit_cell(config: dict, grid: Grid, results: Path, cell: Cell, checks: Checks, verify: int = 0,
               images=None, threads=None, cache: RowCache | None = None) -> dict:
    """The cell's provenance and checks; `cache` is the table's row cache when the audit came from a table."""
    from ..certify import code_version, library_versions
    from .verify import not_recertifiable, verify_cell

    cid = cell_id(cell)
    layout = Layout(results, grid.experiment)
    rows_path = layout.rows(cell)
    meta = load_meta(layout, cell)
    rows = (cache or RowCache(results, grid.experiment)).get(cell)
    imported = _imported(meta, grid, cell, checks) if meta.get("imported") else None
    if imported is None and cid in getattr(grid, "imported", {}):
        checks.add("cell.imported", MISMATCH, f"the config imports {cid} from {grid.imported[cid].log}, but its "
                   "meta.json records computed rows: import it (`diffsmooth import --configfile <config>`)")
    why_not = f"imported from {imported['source']}" if imported else ""

    stored_cell = meta.get("cell")
    if stored_cell is None:
        checks.skip("cell.parameters", "meta.json records no cell parameters: they were not compared with the config")
    else:
        checks.ok_if("cell.parameters", stored_cell == cell.to_dict(), "meta.json records the config's parameters",
                     f"meta.json records {stored_cell} but the config's cell is {cell.to_dict()}")

    images_meta = list(meta.get("images", []))
    idx = rows["idx"].tolist()
    checks.ok_if("rows.images", idx == images_meta, f"{len(idx)} rows, one per image of meta.json, in order",
                 f"rows.tsv holds images {compact_indices(idx)}; meta.json says {compact_indices(images_meta)}")
    rows_sha = file_sha256(rows_path)
    if imported:
        reason = f"{why_not}: no pipeline shards or sha256 summaries exist for imported rows"
        checks.skip("rows.pipeline_sha256", reason)
        checks.skip("rows.shards", reason)
        recorded, summary, shard_infos = None, None, []
    else:
        recorded = summary_check(checks, "rows.pipeline_sha256", results, grid, cell, rows_path, None,
                                  meta.get("mode"), "rows.tsv")
        summary = (group_summary_path(grid, group_id(cell), None, results=str(results))
                   if meta.get("mode") == "fused" else None)
        shard_infos = shard_checks(results, grid, layout, cell, meta, rows_path, checks)
    bad_stats = statistics_problems(rows, cell)
    derived = ("pA_lower, radius, predict and correct follow from its nA" if rows["nA"].notna().all() else
               "correct = (predict == label), abstentions have radius 0, radius within N's limit "
               "(nA/pA_lower re-derived where the log has them)")
    checks.ok_if("rows.statistics", not bad_stats,
                 f"every row's {derived} (N = {cell.N}, alpha = {cell.alpha:g}, sigma = {cell.sigma:g})",
                 "rows inconsistent with CERTIFY's statistics: " + "; ".join(
                     f"image {b['idx']}: {', '.join(b['problems'])}" for b in bad_stats[:5])
                 + (f" (+{len(bad_stats) - 5} more)" if len(bad_stats) > 5 else ""))

    data, dataset = _data_subset(config, meta, rows, shard_infos, why_not, checks)

    if imported:
        checks.skip("checkpoints", f"{why_not}: no checkpoints were recorded")
        ckpts = []
    else:
        ckpts = audit_checkpoints(config, cell, meta, checks)

    recorded_codes = [{"shard": s["shard"], **s["code"]} for s in shard_infos]
    if any(c.get("dirty") for c in recorded_codes):
        checks.add("code.dirty", INFO, "some shards were certified from a working tree with uncommitted changes "
                   "under diffsmooth/ (the commit alone does not pin the code)")
    versions_now = library_versions()
    rec_versions = meta.get("versions", {}) if isinstance(meta.get("versions"), dict) else {}
    vdiff = [f"{k}: recorded {rec_versions.get(k)}, now {versions_now.get(k)}"
             for k in sorted(set(rec_versions) | set(versions_now))
             if rec_versions and rec_versions.get(k) != versions_now.get(k)]
    if vdiff:
        checks.add("versions", INFO, "library versions differ from the recorded ones: " + "; ".join(vdiff))

    settings = recorded_settings(config, meta, checks)
    times = rows["time"].to_numpy(dtype=float)
    timing = {"scope": meta.get("time_scope", "seconds per image, as the log recorded" if imported
                                else "seconds per image"),
              "images": int(len(times)),
              "mean_s": float(times.mean()) if len(times) else 0.0,
              "median_s": float(np.median(times)) if len(times) else 0.0,
              "min_s": float(times.min()) if len(times) else 0.0,
              "max_s": float(times.max()) if len(times) else 0.0,
              "total_s": float(times.sum()),
              "per_shard": [{"shard": s["shard"], **s["timing"]} for s in shard_infos]}
    cells_in_job = [s["cells_in_job"] for s in shard_infos if s["cells_in_job"] is not None]
    device = {"device": meta.get("device"), "device_name": meta.get("device_name"), "threads": meta.get("threads"),
              "batch_size": meta.get("batch_size"), "mode": meta.get("mode"),
              "cells_in_job": max(cells_in_job) if cells_in_job else None}
    params = {**cell.to_dict(), "sigma_local_effective": cell.sigma_local_effective,
              "uses_diffusion": cell.uses_diffusion, "max_certifiable_radius": max_certifiable_radius(cell),
              "group": group_id(cell)}
    if cell.uses_diffusion and "diffusion" in meta.get("checkpoints", {}):
        d = meta["checkpoints"]["diffusion"]
        params["t_star"], params["model_time"] = d.get("t_star"), d.get("model_time")
    seeds = meta.get("seeds") if isinstance(meta.get("seeds"), dict) else {"seed": None}
    out = {
        "cell_id": cid, "dir": str(layout.cell_dir(cell)), "parameters": params, "data": data, "imported": imported,
        "rows": {"path": str(rows_path), "sha256": rows_sha, "pipeline_summary": summary,
                 "pipeline_sha256": recorded, "count": int(len(rows)), "inconsistent": bad_stats,
                 "correct": int(rows["correct"].sum()),
                 "abstained": int((rows["predict"] == statistics.ABSTAIN).sum())},
        "checkpoints": ckpts,
        "code": {"recorded": recorded_codes, "current": code_version()},
        "versions": {"recorded": rec_versions, "current": versions_now, "differences": vdiff},
        "device": device, "settings": settings,
        "seeds": {**seeds, "noise_block": next((s["noise_block"] for s in shard_infos
                                                if s["noise_block"] is not None), None)},
        "provenance": [{"shard": s["shard"], "snakemake_rule": s["snakemake_rule"], "command": s["command"],
                        "command_text": s["command_text"], "rows": s["rows"], "rows_sha256": s["rows_sha256"],
                        "pipeline_sha256": s["pipeline_sha256"], "images_compact": s["images_compact"]}
                       for s in shard_infos],
        "timing": timing, "verification": None,
    }
    if imported:
        out["verification"] = not_recertifiable(why_not, checks, requested=bool(verify or images))
    elif verify or images:
        out["verification"] = verify_cell(config, grid, cell, meta, rows, dataset, ckpts, checks, verify,
                                          images, threads, settings["values"])
    return out
