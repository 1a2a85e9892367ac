"""Audit one table cell: where a rendered number comes from, and whether it reproduces.

    diffsmooth audit --configfile config/fast.yaml table4 2 0.30          # row number, radius column
    diffsmooth audit table4 "DiffSmooth (Gaussian) | 0.25 | 0.25" ACR     # row label, ACR column
    diffsmooth audit table1 5 0.20 --verify 3                             # envelope: audits the winning cell
    diffsmooth audit <cell id> --verify 3 --images 3,17                   # a cell directly (also --cell-id)

The audit follows `results/tables/<exp>/<table>.cells.csv` to the cell (for an envelope row, to the
sigma/sigma' cell that won that radius), recomputes the number from the cell's rows, and checks the
cell's provenance: the rows against their shard files and the pipeline's sha256 summaries, every row's
predict/radius/pA_lower against its nA, the data subset's sha256, the checkpoints' sha256 (and DVC's md5
where DVC tracks them). `--verify K` re-certifies K images with the recorded seeds, batch size and
device and compares nA, predict, radius and pA_lower exactly. Any mismatch makes the exit code 1.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import time
from pathlib import Path

import numpy as np
import yaml

from . import metrics, statistics
from .grid import REPO_ROOT, Grid, cell_id, group_id, group_summary_path, max_certifiable_radius
from .rows import HEADER, read_rows
from .smoothing import Cell

SCHEMA = REPO_ROOT / "workflow" / "schemas" / "audit.schema.json"
SCHEMA_VERSION = 1
DASH = "−"
OK, MISMATCH, SKIPPED, INFO = "ok", "mismatch", "skipped", "info"
ROUNDING_TEXT = {
    "reference": "reference: radii rounded to 3 significant digits before comparing with r "
                 "(what Cohen et al.'s certify.py stored)",
    "exact": "exact: full-precision radii compared with r",
}


class AuditError(ValueError):
    """The audit cannot start (unknown table/row/column, missing results); the message names the fix."""


# ---------------------------------------------------------------------------------------------------
# Entry point


def run_audit(args, config: dict, grid: Grid) -> int:
    """`diffsmooth audit`: print the audit (text or JSON); 0 when everything matches, 1 otherwise."""
    report = build_report(config, grid, results=getattr(args, "results", "results"), table=args.table,
                          row=args.row, column=args.column, cell=getattr(args, "cell_id", None),
                          verify=getattr(args, "verify", 0) or 0, images=getattr(args, "images", None),
                          threads=getattr(args, "threads", None))
    if getattr(args, "json", False):
        validate_report(report)
        text = json.dumps(report, indent=2, ensure_ascii=False)
    else:
        text = format_text(report)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `diffsmooth audit ... | head`
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if report["ok"] else 1


def validate_report(report: dict) -> None:
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(report)


class _Checks:
    def __init__(self):
        self.items = []

    def add(self, name: str, status: str, detail: str) -> str:
        self.items.append({"name": name, "status": status, "detail": detail})
        return status

    def ok_if(self, name: str, cond: bool, ok_detail: str, bad_detail: str) -> bool:
        self.add(name, OK if cond else MISMATCH, ok_detail if cond else bad_detail)
        return cond


def build_report(config: dict, grid: Grid, results="results", table=None, row=None, column=None, cell=None,
                 verify: int = 0, images=None, threads=None) -> dict:
    results = Path(results)
    checks = _Checks()
    if verify < 0:
        raise AuditError(f"--verify must be >= 0, got {verify}")
    if cell is None and table is not None and "/" in str(table) and row is None and column is None:
        cell, table = table, None  # `diffsmooth audit <cell id>`
    report = {"schema_version": SCHEMA_VERSION, "experiment": grid.experiment, "target": None, "value": None,
              "cell_audit": None, "checks": checks.items, "ok": True}
    if cell is not None:
        c = grid.cell_by_id(cell)
        report["target"] = {"table": None, "row": None, "row_label": None, "column": None, "cell_id": cell,
                            "appears_in": _appearances(results, grid, cell)}
        target_cell = c
    else:
        if table is None or row is None or column is None:
            raise AuditError("name a table cell as `TABLE ROW COLUMN` (e.g. `table4 2 0.30` or `table4 2 ACR`), "
                             "or a cell with `--cell-id <id>` (ids: `diffsmooth cells --configfile ...`)")
        target, value, target_cell = _audit_value(results, grid, table, row, column, checks)
        report["target"], report["value"] = target, value
    if target_cell is not None:
        report["cell_audit"] = audit_cell(config, grid, results, target_cell, checks, verify=verify,
                                          images=images, threads=threads)
    report["ok"] = not any(c["status"] == MISMATCH for c in checks.items)
    return report


# ---------------------------------------------------------------------------------------------------
# Table position -> value


def _table_spec(grid: Grid, table: str):
    ids = [t.id for t in grid.tables]
    text = str(table).strip().lower().replace(" ", "")
    for cand in (text, f"table{text}", text.replace("tab.", "table")):
        if cand in ids:
            return next(t for t in grid.tables if t.id == cand)
    raise AuditError(f"no table {table!r} in experiment {grid.experiment!r}: use one of {', '.join(ids)}")


def _read_cells_csv(results: Path, grid: Grid, table_id: str) -> list[dict]:
    path = results / "tables" / grid.experiment / f"{table_id}.cells.csv"
    if not path.exists():
        raise AuditError(f"{path} does not exist: render the tables first (`snakemake -c2 all_tables "
                         f"--configfile <config>` or `diffsmooth tables --configfile <config>`)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _norm_label(text: str) -> list[str]:
    text = text.replace("′", "'").replace("’", "'").lower()
    parts = re.split(r"\s*[|,]\s*", text.strip())
    out = []
    for p in parts:
        p = re.sub(r"^(σ'|σ|sigma'|sigma|m|setting|method|model|architecture)\s*=\s*", "", p.strip())
        p = re.sub(r"\s+", " ", p)
        if p:
            out.append(p)
    return out


def _resolve_row(entries: list[dict], row: str, table_id: str) -> int:
    labels = {}
    for e in entries:
        labels.setdefault(int(e["row"]), e["row_label"])
    text = str(row).strip()
    if re.fullmatch(r"\d+", text):
        n = int(text)
        if n not in labels:
            raise AuditError(f"{table_id} has rows 1..{max(labels)}; row {n} does not exist")
        return n
    want = _norm_label(text)
    exact = [n for n, lab in labels.items() if _norm_label(lab) == want]
    if len(exact) == 1:
        return exact[0]
    sub = [n for n, lab in labels.items() if " | ".join(want) in " | ".join(_norm_label(lab))]
    if len(sub) == 1:
        return sub[0]
    listing = "; ".join(f"{n}: {lab}" for n, lab in labels.items())
    what = "matches several rows" if (exact or sub) else "matches no row"
    raise AuditError(f"row {row!r} {what} of {table_id}; give the row number or its full label ({listing})")


def _resolve_column(header_cols: list[str], column: str, table_id: str) -> str:
    text = str(column).strip()
    if text.lower() == "acr":
        if "ACR" in header_cols:
            return "ACR"
        raise AuditError(f"{table_id} has no ACR column (columns: {', '.join(header_cols)})")
    text = text.lower().removeprefix("r=").removeprefix("r =").strip()
    try:
        r = float(text)
    except ValueError:
        raise AuditError(f"column {column!r}: give a radius such as 0.30 / 0.3, or ACR "
                         f"(columns of {table_id}: {', '.join(header_cols)})") from None
    for col in header_cols:
        if col != "ACR" and abs(float(col) - r) < 1e-9:
            return col
    raise AuditError(f"{table_id} has no radius column {column!r} (columns: {', '.join(header_cols)})")


def _markdown_value(results: Path, grid: Grid, table_id: str, row: int, column: str) -> str | None:
    path = results / "tables" / grid.experiment / f"{table_id}.md"
    if not path.exists():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    if len(lines) < 2 + row:
        return None
    split = lambda ln: [x.strip() for x in ln.strip().strip("|").split("|")]  # noqa: E731
    header, body = split(lines[0]), split(lines[1 + row])
    if column not in header or len(body) != len(header):
        return None
    return body[header.index(column)].replace("**", "")


def _fmt_pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}"


def _audit_value(results, grid, table, row, column, checks: _Checks):
    spec = _table_spec(grid, table)
    entries = _read_cells_csv(results, grid, spec.id)
    if not entries:
        raise AuditError(f"{spec.id}.cells.csv is empty: re-render the tables")
    row_n = _resolve_row(entries, row, spec.id)
    cols = list(dict.fromkeys(e["column"] for e in entries if int(e["row"]) == row_n))
    col = _resolve_column(cols, column, spec.id)
    entry = next(e for e in entries if int(e["row"]) == row_n and e["column"] == col)
    if row_n > len(spec.rows):
        raise AuditError(f"{spec.id}.cells.csv has row {row_n} but the config's {spec.id} has {len(spec.rows)} rows: "
                         "the rendered tables are stale; re-render them")
    trow = spec.rows[row_n - 1]
    config_label = " | ".join(trow.labels.get(k, "") for k in spec.key_columns if trow.labels.get(k, ""))
    checks.ok_if("table.row_label", config_label == entry["row_label"],
                 f"row {row_n} of {spec.id}.cells.csv is the config's row {config_label!r}",
                 f"row {row_n} of {spec.id}.cells.csv is labelled {entry['row_label']!r} but the config's row "
                 f"{row_n} is {config_label!r}: the rendered tables are stale (re-render them)")
    target = {"table": spec.id, "row": row_n, "row_label": entry["row_label"], "column": col,
              "cell_id": entry.get("cell_id") or None, "appears_in": []}
    markdown = _markdown_value(results, grid, spec.id, row_n, col)
    rendered = entry["value"]
    rounding = entry.get("rounding") or grid.config["certify"]["rounding"]
    value = {"kind": None, "rendered": rendered, "rendered_markdown": markdown, "radius": None,
             "rounding": None, "k": None, "n": None, "k_reference": None, "k_exact": None,
             "recomputed": None, "matches": False, "formula": "", "envelope": None, "cell_id": None}
    cache: dict = {}

    def rows_of(c: Cell):
        cid = cell_id(c)
        if cid not in cache:
            cache[cid] = read_rows(results / grid.experiment / "cells" / cid / "rows.tsv")
        return cache[cid]

    chosen = None
    if entry.get("source") == "reported" or getattr(trow, "source", "computed") == "reported":
        paper_table = grid.config["tables"].get(spec.id, {}).get("paper")
        again = _reported_value(grid, spec, trow, cols.index(col))
        value.update(kind="reported", recomputed=again if again is not None else rendered,
                     formula=f"the paper's own number (data/paper/, table {paper_table}, row "
                             f"{getattr(trow, 'paper_row', None)}), shown for comparison; this pipeline does not "
                             "compute it, so there is no cell, no rows and nothing to re-certify")
        checks.add("value.reported", INFO, f"{spec.id} row {row_n} is a reported row (the paper's number)")
    elif col == "ACR":
        c = trow.cells[0]
        if len(trow.cells) != 1:
            value.update(kind="dash", recomputed=DASH, formula="ACR is not defined for a per-radius maximum row")
        else:
            rows = rows_of(c)
            correct = rows["correct"].to_numpy(dtype=int) == 1
            total = float(np.sum(rows["radius"].to_numpy(dtype=float)[correct]))
            a = metrics.acr(rows)
            value.update(kind="acr", n=len(rows), k=int(correct.sum()), rounding="exact", recomputed=f"{a:.3f}",
                         cell_id=cell_id(c),
                         formula=f"ACR = (sum of the radii of the {int(correct.sum())} correctly certified images "
                                 f"= {total:.6f}) / {len(rows)} images = {a:.6f} -> {a:.3f} "
                                 "(exact radii, MACER's average certified radius)")
            chosen = c
    else:
        r = float(col)
        value.update(radius=r, rounding=rounding)
        cands = []
        for c in trow.cells:
            limit = max_certifiable_radius(c)
            if r > limit * (1 + 5e-3):  # as tables._radius_limit
                cands.append({"cell_id": cell_id(c), "method": c.method, "classifier": c.classifier, "sigma": c.sigma,
                              "sigma_local": c.sigma_local, "m": c.m, "N": c.N, "value": DASH, "k": None, "n": None,
                              "note": f"r > max certifiable radius {limit:.4f} of N={c.N}, alpha={c.alpha:g}"})
                continue
            rows = rows_of(c)
            k = metrics.certified_count(rows, r, rounding)
            cands.append({"cell_id": cell_id(c), "method": c.method, "classifier": c.classifier, "sigma": c.sigma,
                          "sigma_local": c.sigma_local, "m": c.m, "N": c.N, "value": _fmt_pct(k, len(rows)), "k": k,
                          "n": len(rows), "note": ""})
        numeric = [(i, x) for i, x in enumerate(cands) if x["k"] is not None]
        if not numeric:
            limits = ", ".join(f"{max_certifiable_radius(c):.4f}" for c in trow.cells)
            value.update(kind="dash", recomputed=DASH,
                         formula=f"r = {r:.2f} exceeds the largest radius the cell's N can certify "
                                 f"(sigma * Phi^-1(alpha^(1/N)) = {limits}, 0.5% rounding slack): shown as {DASH}")
            if len(trow.cells) == 1:
                chosen = trow.cells[0]
        else:  # the first cell (config order) wins ties, as tables.compute_table
            best_i, best = max(numeric, key=lambda ix: round(100 * ix[1]["k"] / ix[1]["n"], 1))
            chosen = trow.cells[best_i]
            rows = rows_of(chosen)
            other = "exact" if rounding == "reference" else "reference"
            k_other = metrics.certified_count(rows, r, other)
            value.update(kind="certified_accuracy", k=best["k"], n=best["n"], recomputed=best["value"],
                         cell_id=best["cell_id"],
                         k_reference=best["k"] if rounding == "reference" else k_other,
                         k_exact=best["k"] if rounding == "exact" else k_other,
                         formula=f"100 * k / n = 100 * {best['k']} / {best['n']} = {_fmt_pct(best['k'], best['n'])}, "
                                 f"k = images with correct = 1 and radius >= {r:.2f} (abstentions count as wrong)")
        if len(trow.cells) > 1 or trow.envelope:
            listed = [x for x in (entry.get("envelope_candidates") or "").split(";") if x]
            value["envelope"] = {"winner": value["cell_id"], "candidates": cands,
                                 "csv_winner": entry.get("cell_id") or None, "csv_candidates": listed}
            config_ids = [cell_id(c) for c in trow.cells]
            if listed:
                checks.ok_if("value.envelope_candidates", listed == config_ids,
                             f"cells.csv lists the config's {len(config_ids)} candidate cells",
                             f"cells.csv lists candidates {listed} but the config's row has {config_ids}: "
                             "the rendered tables are stale")
            if value["cell_id"] is not None:
                win = chosen
                checks.ok_if("value.envelope_winner", (entry.get("cell_id") or None) == value["cell_id"],
                             f"the winning cell at r = {r:.2f} is sigma = {win.sigma:.2f}, sigma' = "
                             f"{win.sigma_local:.2f} ({value['cell_id']}), as cells.csv says",
                             f"recomputation picks {value['cell_id']} but cells.csv names {entry.get('cell_id')!r}")
    value["matches"] = value["recomputed"] == rendered
    checks.ok_if("value.recomputed", value["matches"],
                 f"recomputed from the rows: {value['recomputed']} = rendered {rendered}",
                 f"rendered {rendered!r} (cells.csv) but the rows give {value['recomputed']!r}")
    if value["kind"] != "dash" and entry.get("k") not in (None, "") and value["k"] is not None and col != "ACR":
        checks.ok_if("value.k", int(entry["k"]) == value["k"] and int(entry["n"]) == value["n"],
                     f"k = {value['k']}, n = {value['n']} as in cells.csv",
                     f"cells.csv says k = {entry['k']}, n = {entry['n']}; the rows give k = {value['k']}, n = {value['n']}")
    if markdown is None:
        checks.add("value.markdown", SKIPPED, f"{spec.id}.md not found or not parseable")
    else:
        checks.ok_if("value.markdown", markdown == rendered, f"{spec.id}.md shows {markdown}",
                     f"{spec.id}.md shows {markdown!r} but cells.csv says {rendered!r}")
    if chosen is not None and entry.get("cell_id") and value["envelope"] is None:
        checks.ok_if("value.cell_id", entry["cell_id"] == cell_id(chosen), "cells.csv names the config's cell",
                     f"cells.csv names {entry['cell_id']} but the config's row uses {cell_id(chosen)}")
    target["cell_id"] = cell_id(chosen) if chosen is not None else None
    return target, value, chosen


def _reported_value(grid, spec, trow, j: int) -> str | None:
    """A reported row's number as the renderer takes it from data/paper/ (None when that is unavailable)."""
    try:
        from . import tables

        return tables._reported_values(grid, spec, trow)[j].text
    except Exception:  # noqa: BLE001 - the paper data is optional for an audit
        return None


def _appearances(results: Path, grid: Grid, cid: str) -> list[dict]:
    out = []
    for spec in grid.tables:
        path = results / "tables" / grid.experiment / f"{spec.id}.cells.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            for e in csv.DictReader(f):
                if e.get("cell_id") == cid:
                    out.append({"table": spec.id, "row": int(e["row"]), "row_label": e["row_label"],
                                "column": e["column"], "value": e["value"]})
    return out


# ---------------------------------------------------------------------------------------------------
# Cell provenance


def compact_indices(indices) -> str:
    """[0,1,2,3,10,12,14] -> '0-3, 10-14 step 2' (arithmetic runs of >= 3 collapse)."""
    idx = list(indices)
    parts, i = [], 0
    while i < len(idx):
        j = i
        if i + 1 < len(idx):
            step = idx[i + 1] - idx[i]
            while j + 1 < len(idx) and idx[j + 1] - idx[j] == step and step > 0:
                j += 1
        if j - i >= 2:
            step = idx[i + 1] - idx[i]
            parts.append(f"{idx[i]}-{idx[j]}" + (f" step {step}" if step != 1 else ""))
            i = j + 1
        else:
            parts.append(str(idx[i]))
            i += 1
    return ", ".join(parts)


def _sha256(path: Path) -> str | None:
    from .models import sha256_file

    return sha256_file(path) if path.is_file() else None


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _rel(path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def dvc_record(path: Path) -> dict | None:
    """What DVC records for `path`: an entry of ./dvc.lock (stage outs/deps) or of `<path>.dvc`."""
    rel = _rel(path)
    sources = []
    lock = Path("dvc.lock")
    if lock.is_file():
        try:
            data = yaml.safe_load(lock.read_text()) or {}
        except yaml.YAMLError:
            data = {}
        for stage, spec in (data.get("stages") or {}).items():
            for kind in ("outs", "deps"):
                for out in (spec or {}).get(kind) or []:
                    sources.append((f"dvc.lock stage {stage} ({kind})", out, Path(out.get("path", ""))))
    dvc_file = Path(str(path) + ".dvc")
    if dvc_file.is_file():
        try:
            data = yaml.safe_load(dvc_file.read_text()) or {}
        except yaml.YAMLError:
            data = {}
        for out in data.get("outs") or []:
            sources.append((str(dvc_file), out, dvc_file.parent / out.get("path", "")))
    for where, out, opath in sources:
        if _rel(opath) == rel and out.get("md5"):
            md5 = str(out["md5"])
            if md5.endswith(".dir"):
                continue
            return {"source": where, "md5": md5}
    for where, out, opath in sources:  # a file inside a tracked directory
        orel = _rel(opath)
        md5 = str(out.get("md5", ""))
        if md5.endswith(".dir") and rel.startswith(orel.rstrip("/") + "/"):
            inner = rel[len(orel.rstrip("/")) + 1:]
            manifest = Path(".dvc/cache/files/md5") / md5[:2] / md5[2:]
            if manifest.is_file():
                for item in json.loads(manifest.read_text()):
                    if item.get("relpath") == inner:
                        return {"source": f"{where}, directory {orel}", "md5": item["md5"]}
            return {"source": f"{where}, directory {orel}", "md5": None}
    return None


def _checkpoint_audit(config, cell: Cell, meta: dict, checks: _Checks) -> list[dict]:
    out = []
    for role, info in sorted(meta.get("checkpoints", {}).items()):
        name = cell.classifier if role == "classifier" else config["diffusion"].get("name", "diffusion")
        config_path = (config["classifiers"][cell.classifier]["checkpoint"] if role == "classifier"
                       else config["diffusion"]["checkpoint"])
        recorded_path, recorded = info.get("path"), info.get("sha256")
        path = Path(config_path)
        current = _sha256(path)
        item = {"role": role, "name": name, "path": str(config_path), "recorded_path": recorded_path,
                "recorded_sha256": recorded, "current_sha256": current, "matches": current == recorded,
                "dvc": None, "size": path.stat().st_size if path.is_file() else None}
        if current is None:
            checks.add(f"checkpoint.{role}.sha256", MISMATCH, f"{config_path} ({name}) is missing; "
                       f"it had sha256 {recorded}")
        else:
            checks.ok_if(f"checkpoint.{role}.sha256", current == recorded,
                         f"{config_path}: sha256 {current[:16]}... as recorded",
                         f"{config_path} ({name}) changed since certification: sha256 on disk {current}, "
                         f"recorded {recorded}")
        spec = config["classifiers"][cell.classifier] if role == "classifier" else config["diffusion"]
        item["config_sha256"] = spec.get("sha256")
        if spec.get("sha256") and current is not None:
            checks.ok_if(f"checkpoint.{role}.config_sha256", current == spec["sha256"],
                         f"{config_path}: sha256 as the config's `sha256:`",
                         f"{config_path}: sha256 on disk {current}, the config's `sha256:` is {spec['sha256']}")
        if recorded_path and Path(recorded_path) != path:
            checks.add(f"checkpoint.{role}.path", INFO, f"recorded at {recorded_path}, the config now names {config_path}")
        rec = dvc_record(path)
        if rec is not None:
            md5 = _md5(path) if path.is_file() else None
            rec = {**rec, "current_md5": md5, "matches": None if rec["md5"] is None else md5 == rec["md5"]}
            if rec["md5"] is None:
                checks.add(f"checkpoint.{role}.dvc", SKIPPED, f"tracked by {rec['source']}; its manifest is not "
                           "in the local DVC cache, so the file's md5 was not compared")
            else:
                checks.ok_if(f"checkpoint.{role}.dvc", md5 == rec["md5"],
                             f"md5 {md5} matches {rec['source']}",
                             f"{config_path}: md5 on disk {md5}, {rec['source']} records {rec['md5']}")
        item["dvc"] = rec
        out.append(item)
    return out


def _statistics_problems(rows, cell: Cell) -> list[dict]:
    """Rows whose predict/radius/pA_lower/correct do not follow from their nA (CERTIFY's last step)."""
    bad = []
    for r in rows.itertuples(index=False):
        problems = []
        if r.n != cell.N:
            problems.append(f"n = {r.n}, the cell's N = {cell.N}")
        try:
            p = statistics.lower_confidence_bound(int(r.nA), int(r.n), cell.alpha)
        except ValueError as e:
            bad.append({"idx": int(r.idx), "problems": [str(e)]})
            continue
        if p != r.pA_lower:
            problems.append(f"pA_lower = {r.pA_lower!r}, nA = {r.nA} of n = {r.n} gives {p!r}")
        abstain = p < 0.5
        radius = 0.0 if abstain else statistics.certified_radius(p, cell.sigma)
        if radius != r.radius:
            problems.append(f"radius = {r.radius!r}, nA = {r.nA} gives {radius!r}")
        if abstain != (r.predict == statistics.ABSTAIN):
            problems.append(f"predict = {r.predict} but pA_lower {'<' if abstain else '>='} 0.5")
        if int(r.correct) != int(r.predict == r.label):
            problems.append(f"correct = {r.correct} with predict = {r.predict}, label = {r.label}")
        if problems:
            bad.append({"idx": int(r.idx), "problems": problems})
    return bad


def _pipeline_sha(results: Path, grid: Grid, cell: Cell, rel_rows: str, shard: int | None) -> tuple:
    """(summary file, sha256) the pipeline recorded for a rows file, when a summary names it."""
    summary = Path(group_summary_path(grid, group_id(cell), shard, results=str(results)))
    if not summary.is_file():
        return None, None
    try:
        data = json.loads(summary.read_text())
    except json.JSONDecodeError:
        return str(summary), None
    for f in data.get("files", []):
        if f.get("cell_id") == cell_id(cell) and Path(f.get("rows", "")).resolve() == Path(rel_rows).resolve():
            return str(summary), f.get("sha256")
    return str(summary), None


def audit_cell(config: dict, grid: Grid, results: Path, cell: Cell, checks: _Checks, verify: int = 0,
               images=None, threads=None) -> dict:
    from .certify import code_version, library_versions, shard_paths
    from .data import images_digest, load_dataset

    cid = cell_id(cell)
    cdir = results / grid.experiment / "cells" / cid
    rows_path, meta_path = cdir / "rows.tsv", cdir / "meta.json"
    for p in (rows_path, meta_path):
        if not p.is_file():
            raise AuditError(f"{p} does not exist: cell {cid} has not been certified and merged "
                             "(run `snakemake -c2 all_tables --configfile <config>`)")
    meta = json.loads(meta_path.read_text())
    rows = read_rows(rows_path)
    stored_cell = meta.get("cell", {})
    checks.ok_if("cell.parameters", stored_cell == cell.to_dict(), "meta.json records the config's parameters",
                 f"meta.json records {stored_cell} but the config's cell is {cell.to_dict()}")

    # rows: images, shards, pipeline sha256, statistics
    images_meta = list(meta.get("images", []))
    idx = rows["idx"].tolist()
    checks.ok_if("rows.images", idx == images_meta, f"{len(idx)} rows, one per image of meta.json, in order",
                 f"rows.tsv holds images {compact_indices(idx)}; meta.json says {compact_indices(images_meta)}")
    rows_sha = _sha256(rows_path)
    summary, recorded = _pipeline_sha(results, grid, cell, str(rows_path), None)
    if recorded is None:
        checks.add("rows.pipeline_sha256", SKIPPED, "no pipeline summary records this rows.tsv "
                   "(per-cell mode writes none)" if summary is None else f"{summary} does not list this cell")
    else:
        checks.ok_if("rows.pipeline_sha256", recorded == rows_sha, f"sha256 {rows_sha[:16]}... as in {summary}",
                     f"rows.tsv was modified after the merge: sha256 {rows_sha}, {summary} recorded {recorded}")
    shard_infos, concat, shard_images = [], HEADER, []
    meta_shards = meta.get("shards", [])
    pos = 0
    for k, sh in enumerate(meta_shards):
        number = sh.get("shard", k)
        count = sh.get("images", 0)
        imgs = images_meta[pos:pos + count]
        pos += count
        shard_images.append(imgs)
        tsv, js = shard_paths(results, grid.experiment, cell, number)
        info = {"shard": number, "images": imgs, "images_compact": compact_indices(imgs), "rows": str(tsv),
                "rows_sha256": _sha256(tsv), "pipeline_sha256": None, "snakemake_rule": sh.get("snakemake_rule"),
                "command": sh.get("command") or [], "command_text": shlex.join(map(str, sh.get("command") or [])),
                "code": sh.get("code") or {}, "device": sh.get("device"), "batch_size": sh.get("batch_size"),
                "timing": sh.get("timing") or {}, "cells_in_job": None, "mode": None}
        if js.is_file():
            sj = json.loads(js.read_text())
            info["cells_in_job"], info["mode"] = sj.get("cells_in_job"), sj.get("mode")
        if tsv.is_file():
            concat += tsv.read_text()[len(HEADER):]
            s_summary, s_rec = _pipeline_sha(results, grid, cell, str(tsv), number)
            info["pipeline_sha256"] = s_rec
            if s_rec is not None:
                checks.ok_if(f"shard{number}.pipeline_sha256", s_rec == info["rows_sha256"],
                             f"shard {number} rows: sha256 as in {s_summary}",
                             f"{tsv} was modified after certification: sha256 {info['rows_sha256']}, "
                             f"{s_summary} recorded {s_rec}")
        else:
            checks.add(f"shard{number}.rows", MISMATCH, f"{tsv} is missing")
        shard_infos.append(info)
    if all(Path(s["rows"]).is_file() for s in shard_infos):
        checks.ok_if("rows.shards", concat == rows_path.read_text(),
                     f"rows.tsv equals its {len(shard_infos)} shard file(s) concatenated",
                     "rows.tsv differs from the concatenation of its shard files (one of them was edited)")
    bad_stats = _statistics_problems(rows, cell)
    checks.ok_if("rows.statistics", not bad_stats,
                 f"every row's pA_lower, radius, predict and correct follow from its nA (N = {cell.N}, "
                 f"alpha = {cell.alpha:g}, sigma = {cell.sigma:g})",
                 "rows inconsistent with CERTIFY's statistics: " + "; ".join(
                     f"image {b['idx']}: {', '.join(b['problems'])}" for b in bad_stats[:5])
                 + (f" (+{len(bad_stats) - 5} more)" if len(bad_stats) > 5 else ""))

    # data subset
    dataset_name = config["dataset"]["name"]
    stored_digests = list(meta.get("images_sha256", []))
    data = {"dataset": dataset_name, "root": config["dataset"]["root"], "count": len(images_meta),
            "images_compact": compact_indices(images_meta), "images": images_meta, "shards": []}
    dataset = None
    try:
        dataset = load_dataset(dataset_name, config["dataset"]["root"])
    except (FileNotFoundError, ValueError) as e:
        checks.add("data.images_sha256", SKIPPED, f"dataset not available here: {e}")
    for k, imgs in enumerate(shard_images):
        stored = stored_digests[k] if k < len(stored_digests) else None
        now = images_digest(dataset, imgs) if dataset is not None else None
        data["shards"].append({"shard": shard_infos[k]["shard"], "images_compact": compact_indices(imgs),
                               "stored_sha256": stored, "current_sha256": now,
                               "matches": None if now is None else now == stored})
    if dataset is not None:
        bad = [s for s in data["shards"] if not s["matches"]]
        checks.ok_if("data.images_sha256", not bad,
                     f"sha256 of the {len(images_meta)} images and labels recomputed = stored, per shard",
                     "the data subset changed: " + "; ".join(
                         f"shard {s['shard']} ({s['images_compact']}) stored {s['stored_sha256']}, now "
                         f"{s['current_sha256']}" for s in bad))

    ckpts = _checkpoint_audit(config, cell, meta, checks)

    code_now = code_version()
    recorded_codes = [{"shard": s["shard"], **s["code"]} for s in shard_infos]
    if any(c.get("dirty") for c in recorded_codes):
        checks.add("code.dirty", INFO, "some shards were certified from a working tree with uncommitted changes "
                   "under diffsmooth/ (the commit alone does not pin the code)")
    versions_now = library_versions()
    rec_versions = meta.get("versions", {})
    vdiff = [f"{k}: recorded {rec_versions.get(k)}, now {versions_now.get(k)}"
             for k in sorted(set(rec_versions) | set(versions_now)) if rec_versions.get(k) != versions_now.get(k)]
    if vdiff:
        checks.add("versions", INFO, "library versions differ from the recorded ones: " + "; ".join(vdiff))

    times = rows["time"].to_numpy(dtype=float)
    timing = {"scope": meta.get("time_scope", "seconds per image"), "images": int(len(times)),
              "mean_s": float(times.mean()) if len(times) else 0.0,
              "median_s": float(np.median(times)) if len(times) else 0.0,
              "min_s": float(times.min()) if len(times) else 0.0,
              "max_s": float(times.max()) if len(times) else 0.0,
              "total_s": float(times.sum()),
              "per_shard": [{"shard": s["shard"], **s["timing"]} for s in shard_infos]}
    cells_in_job = [s["cells_in_job"] for s in shard_infos if s["cells_in_job"] is not None]
    device = {"device": meta.get("device"), "device_name": meta.get("device_name"), "threads": meta.get("threads"),
              "batch_size": meta.get("batch_size"), "mode": meta.get("mode"),
              "cells_in_job": max(cells_in_job) if cells_in_job else None,
              "autocast": config["certify"].get("autocast"), "channels_last": config["certify"].get("channels_last")}
    limit = max_certifiable_radius(cell)
    params = {**cell.to_dict(), "sigma_local_effective": cell.sigma_local_effective,
              "uses_diffusion": cell.uses_diffusion, "max_certifiable_radius": limit,
              "group": group_id(cell)}
    if cell.uses_diffusion and "diffusion" in meta.get("checkpoints", {}):
        d = meta["checkpoints"]["diffusion"]
        params["t_star"], params["model_time"] = d.get("t_star"), d.get("model_time")

    out = {
        "cell_id": cid, "dir": str(cdir), "parameters": params, "data": data,
        "rows": {"path": str(rows_path), "sha256": rows_sha, "pipeline_summary": summary,
                 "pipeline_sha256": recorded, "count": int(len(rows)), "inconsistent": bad_stats,
                 "correct": int(rows["correct"].sum()),
                 "abstained": int((rows["predict"] == statistics.ABSTAIN).sum())},
        "checkpoints": ckpts,
        "code": {"recorded": recorded_codes, "current": code_now},
        "versions": {"recorded": rec_versions, "current": versions_now, "differences": vdiff},
        "device": device,
        "seeds": {**meta.get("seeds", {}), "noise_block": _noise_block(results, grid, cell)},
        "provenance": [{"shard": s["shard"], "snakemake_rule": s["snakemake_rule"], "command": s["command"],
                        "command_text": s["command_text"], "rows": s["rows"], "rows_sha256": s["rows_sha256"],
                        "pipeline_sha256": s["pipeline_sha256"], "images_compact": s["images_compact"]}
                       for s in shard_infos],
        "timing": timing, "verification": None,
    }
    if verify or images:
        out["verification"] = verify_cell(config, grid, cell, meta, rows, dataset, ckpts, checks, verify,
                                          images, threads)
    return out


def _noise_block(results, grid, cell) -> int | None:
    from .certify import shard_paths

    _, js = shard_paths(results, grid.experiment, cell, 0)
    if js.is_file():
        return json.loads(js.read_text()).get("identity", {}).get("noise_block")
    return None


# ---------------------------------------------------------------------------------------------------
# Re-certification


def choose_images(images: list, k: int, given=None) -> list:
    """`given` (comma-separated indices, each in the cell) or k images evenly spaced over the cell's images."""
    if given:
        try:
            wanted = [int(x) for x in str(given).replace(" ", "").split(",") if x]
        except ValueError:
            raise AuditError(f"--images {given!r}: give comma-separated image indices, e.g. 3,17") from None
        missing = [i for i in wanted if i not in images]
        if missing:
            raise AuditError(f"--images: {missing} not among the cell's images ({compact_indices(images)})")
        return list(dict.fromkeys(wanted))
    n = len(images)
    if k >= n:
        return list(images)
    return [images[int((j + 0.5) * n / k)] for j in range(k)]


def verify_cell(config, grid, cell: Cell, meta: dict, rows, dataset, ckpts, checks: _Checks, k: int,
                given, threads) -> dict:
    """Re-certify some images of the cell alone with the recorded settings; compare with the stored rows."""
    import torch

    from .certify import load_models, resolve_device
    from .data import dataset_info
    from .smoothing import Certifier

    chosen = choose_images(list(rows["idx"]), k, given)
    out = {"images": chosen, "device": None, "recorded_device": meta.get("device"), "batch_size": meta.get("batch_size"),
           "threads": None, "batch_shapes": "", "checkpoints_loaded": [], "results": [], "all_match": False,
           "status": SKIPPED, "reason": ""}
    bad_ckpt = [c for c in ckpts if not c["matches"]]
    if bad_ckpt:
        out["reason"] = ("checkpoint(s) differ from the ones recorded (" + ", ".join(c["path"] for c in bad_ckpt)
                         + "): re-certifying with other weights cannot reproduce the rows")
        checks.add("verify", SKIPPED, out["reason"])
        return out
    if dataset is None:
        out["reason"] = "dataset not available"
        checks.add("verify", SKIPPED, out["reason"])
        return out
    recorded = str(meta.get("device") or config["device"])
    try:
        device = resolve_device(recorded)
    except RuntimeError:
        device = resolve_device(config["device"])
        checks.add("verify.device", INFO, f"recorded on {recorded}, which is not available here: re-certifying on "
                   f"{device}; exact equality is only expected on the recorded device type")
    nthreads = threads or meta.get("threads") or config["threads"]
    torch.set_num_threads(int(nthreads))
    out.update(device=str(device), threads=int(nthreads))
    # Batch shapes as in the job that wrote the rows: a fused job ran max(N) / max(n0) of its group in one
    # stream, so a padding cell with the same head (no extra classifier passes) reproduces its batches.
    cells = [cell]
    group = grid.groups().get(group_id(cell), [cell])
    if meta.get("mode") == "fused":
        big_n, big_n0 = max(c.N for c in group), max(c.n0 for c in group)
        if big_n > cell.N or big_n0 > cell.n0:
            cells.append(Cell(**{**cell.to_dict(), "N": big_n, "n0": big_n0}))
            out["batch_shapes"] = (f"as in the fused job: samples drawn up to N = {big_n}, n0 = {big_n0} of the "
                                   f"sigma group, batch size {meta.get('batch_size')}")
    if not out["batch_shapes"]:
        out["batch_shapes"] = f"this cell's N = {cell.N}, n0 = {cell.n0}, batch size {meta.get('batch_size')}"
    shape, num_classes = dataset_info(config["dataset"]["name"])
    classifiers, purifier, clf_infos, diff_info = load_models(config, [cell], device, config["dataset"]["name"])
    loaded = {"classifier": clf_infos[cell.classifier]}
    if cell.uses_diffusion:
        loaded["diffusion"] = diff_info
    ok_load = True
    for role, info in loaded.items():
        rec = meta["checkpoints"].get(role, {}).get("sha256")
        out["checkpoints_loaded"].append({"role": role, "path": info.get("path"), "sha256": info.get("sha256"),
                                          "matches": info.get("sha256") == rec})
        ok_load &= info.get("sha256") == rec
    if cell.uses_diffusion:
        rec_t = meta["checkpoints"].get("diffusion", {}).get("t_star")
        if rec_t is not None and rec_t != diff_info.get("t_star"):
            ok_load = False
            checks.add("verify.t_star", MISMATCH, f"purifier t* = {diff_info.get('t_star')}, recorded {rec_t}")
    checks.ok_if("verify.checkpoints", ok_load, "the loaded checkpoints have the recorded sha256",
                 "the checkpoints load_models read differ from the recorded ones")
    certifier = Certifier(cells, classifiers, purifier, num_classes, shape,
                          batch_size=int(meta.get("batch_size") or config["certify"]["batch_size"]), device=device)
    stored = rows.set_index("idx")
    for i in chosen:
        x, label = dataset.get(int(i))
        t0 = time.perf_counter()
        r = certifier.certify(x, int(i))[cell]
        elapsed = time.perf_counter() - t0
        s = stored.loc[int(i)]
        now = {"nA": int(r.n_a), "predict": int(r.predict), "radius": float(r.radius),
               "pA_lower": float(r.p_a_lower), "correct": int(r.predict == label)}
        was = {"nA": int(s["nA"]), "predict": int(s["predict"]), "radius": float(s["radius"]),
               "pA_lower": float(s["pA_lower"]), "correct": int(s["correct"])}
        fields = {}
        for name in now:
            diff = now[name] - was[name]
            fields[name] = {"stored": was[name], "recomputed": now[name], "match": now[name] == was[name],
                            "difference": diff}
        out["results"].append({"idx": int(i), "label": int(label), "match": all(f["match"] for f in fields.values()),
                               "fields": fields, "time_s": elapsed, "stored_time_s": float(s["time"])})
    bad = [r for r in out["results"] if not r["match"]]
    out["all_match"] = not bad
    out["status"] = OK if not bad else MISMATCH
    checks.ok_if("verify.rows", not bad,
                 f"{len(chosen)} image(s) re-certified: nA, predict, radius, pA_lower identical to the stored rows",
                 "re-certification differs from the stored rows: " + "; ".join(
                     f"image {r['idx']}: " + ", ".join(f"{n} stored {f['stored']!r} now {f['recomputed']!r} "
                                                       f"(diff {f['difference']:+.6g})"
                                                       for n, f in r["fields"].items() if not f["match"])
                     for r in bad))
    return out


# ---------------------------------------------------------------------------------------------------
# Text rendering


def _short(sha: str | None) -> str:
    return sha[:16] + "..." if sha else "-"


def _cand_label(c: dict) -> str:
    """How an envelope row tells its cells apart: sigma and sigma' (DiffSmooth) or the classifier (RS, DDS)."""
    if c["m"]:
        return f"σ = {c['sigma']:.2f}, σ' = {c['sigma_local']:.2f}"
    return f"σ = {c['sigma']:.2f}, classifier {c['classifier']}"


def format_text(rep: dict) -> str:
    L = []
    add = L.append
    t = rep["target"]
    mark = {OK: "OK", MISMATCH: "MISMATCH", SKIPPED: "skipped", INFO: "note"}
    by_name = {c["name"]: c for c in rep["checks"]}

    def st(name):
        c = by_name.get(name)
        return f"[{mark[c['status']]}]" if c else ""

    if t["table"]:
        col = "ACR" if t["column"] == "ACR" else f"r = {t['column']}"
        add(f"Audit of {t['table']}, row {t['row']} ({t['row_label']}), {col} -- experiment {rep['experiment']}")
    else:
        add(f"Audit of cell {t['cell_id']} -- experiment {rep['experiment']}")
        for a in t.get("appears_in") or []:
            add(f"  shown in {a['table']} row {a['row']} ({a['row_label']}), column {a['column']}: {a['value']}")
    v = rep["value"]
    if v:
        add("")
        add("Value")
        md = f", {v['rendered_markdown']} in {t['table']}.md" if v["rendered_markdown"] is not None else ""
        add(f"  rendered     {v['rendered']} (cells.csv){md}")
        add(f"  computed as  {v['formula']}")
        if v["kind"] == "certified_accuracy":
            add(f"  rounding     {ROUNDING_TEXT.get(v['rounding'], v['rounding'])}")
            add(f"               k = {v['k_reference']} with reference rounding, k = {v['k_exact']} with exact radii")
        add(f"  recomputed   {v['recomputed']} from the rows  {st('value.recomputed')}")
        env = v.get("envelope")
        if env:
            add(f"  envelope     per-radius maximum over {len(env['candidates'])} cells (first in config order wins ties):")
            for c in env["candidates"]:
                win = "  <- winner" if c["cell_id"] == env["winner"] else ""
                kn = f"  ({c['k']}/{c['n']})" if c["k"] is not None else f"  ({c['note']})"
                add(f"    {_cand_label(c)}: {c['value']:>5}{kn}  {c['cell_id']}{win}")
    ca = rep["cell_audit"]
    if ca:
        p = ca["parameters"]
        add("")
        add(f"Cell  {ca['cell_id']}")
        local = ""
        if p["m"]:
            local = (f", σ' = {p['sigma_local']:g} (+ shift {p['shift']:g} = {p['sigma_local_effective']:g} effective), "
                     f"m = {p['m']}, local noise {p['local_noise']}")
        add(f"  method {p['method']}, classifier {p['classifier']}, σ = {p['sigma']:g}{local}")
        add(f"  N = {p['N']}, n0 = {p['n0']}, alpha = {p['alpha']:g}, seed {p['seed']}; max certifiable radius "
            f"{p['max_certifiable_radius']:.4f}" + (f"; purifier t* = {p['t_star']}" if p.get("t_star") is not None else ""))
        d = ca["data"]
        add("")
        add(f"Data  {d['dataset']} test images {d['images_compact']} ({d['count']} images, {len(d['shards'])} shard(s))  "
            f"{st('data.images_sha256')}")
        for s in d["shards"]:
            same = "" if s["matches"] is None else ("= recomputed" if s["matches"] else f"!= recomputed {_short(s['current_sha256'])}")
            add(f"  shard {s['shard']}: images {s['images_compact']}  sha256 {_short(s['stored_sha256'])} {same}")
        r = ca["rows"]
        add("")
        add(f"Rows  {r['path']}")
        add(f"  {r['count']} rows, {r['correct']} correct, {r['abstained']} abstained; sha256 {_short(r['sha256'])}")
        for name, label in (("rows.pipeline_sha256", "sha256 vs the pipeline's summary"),
                            ("rows.shards", "equals its shard files"),
                            ("rows.statistics", "predict/radius/pA_lower follow from nA"),
                            ("rows.images", "one row per recorded image")):
            if name in by_name:
                add(f"  {label:<40} {st(name)}" + ("" if by_name[name]["status"] == OK else f" {by_name[name]['detail']}"))
        add("")
        add("Checkpoints")
        for c in ca["checkpoints"]:
            add(f"  {c['role']:<10} {c['name']}  {c['path']}")
            now = "missing" if c["current_sha256"] is None else ("same on disk" if c["matches"] else
                                                                 f"ON DISK {c['current_sha256']}")
            add(f"             sha256 {c['recorded_sha256']}  ({now})  {st('checkpoint.' + c['role'] + '.sha256')}")
            if c["dvc"]:
                add(f"             dvc md5 {c['dvc']['md5']} ({c['dvc']['source']}), file md5 {c['dvc']['current_md5']}  "
                    f"{st('checkpoint.' + c['role'] + '.dvc')}")
            else:
                add("             not tracked by DVC (no dvc.lock entry or .dvc file)")
        add("")
        codes = {(c.get("commit"), c.get("dirty")) for c in ca["code"]["recorded"]}
        rec = "; ".join((f"{cm[:12]} ({'dirty tree' if dt else 'clean tree'})" if cm else
                         "unknown (not certified from a git checkout)") for cm, dt in sorted(codes, key=str))
        cur = ca["code"]["current"]
        now = (f"{cur['commit'][:12]}" + (" (dirty)" if cur.get("dirty") else "")) if cur.get("commit") else "not a git checkout"
        add(f"Code  recorded commit {rec}; this checkout: {now}")
        vr = ca["versions"]["recorded"]
        add("Libraries  " + ", ".join(f"{k} {v}" for k, v in sorted(vr.items()))
            + ("  (same now)" if not ca["versions"]["differences"] else
               "  (now: " + "; ".join(ca["versions"]["differences"]) + ")"))
        dv = ca["device"]
        add(f"Device  {dv['device']} ({dv['device_name']}), {dv['threads']} thread(s), batch size {dv['batch_size']}, "
            f"{dv['mode']} mode" + (f" ({dv['cells_in_job']} cell(s) in the job)" if dv["cells_in_job"] else "")
            + f", autocast {dv['autocast']}")
        sd = ca["seeds"]
        add(f"Seeds  seed {sd.get('seed')}; noise {sd.get('noise')}; local noise {sd.get('local_noise')}")
        add("")
        add("Produced by")
        for pv in ca["provenance"]:
            add(f"  shard {pv['shard']} (images {pv['images_compact']}): rule {pv['snakemake_rule'] or '-'}")
            add(f"    $ {pv['command_text']}")
        tm = ca["timing"]
        add("")
        add(f"Timing  {tm['scope']}: mean {tm['mean_s']:.3f} s, median {tm['median_s']:.3f} s, "
            f"min {tm['min_s']:.3f} s, max {tm['max_s']:.3f} s, total {tm['total_s']:.1f} s over {tm['images']} images")
        vf = ca["verification"]
        if vf:
            add("")
            if vf["status"] == SKIPPED and not vf["results"]:
                add(f"Verification  skipped: {vf['reason']}")
            else:
                add(f"Verification  {len(vf['images'])} image(s) re-certified on {vf['device']}, "
                    f"{vf['threads']} thread(s); batch shapes {vf['batch_shapes']}")
                for res in vf["results"]:
                    f = res["fields"]
                    line = (f"  image {res['idx']:>5}: nA {f['nA']['recomputed']:>7} predict {f['predict']['recomputed']:>4} "
                            f"radius {f['radius']['recomputed']:.6f} pA_lower {f['pA_lower']['recomputed']:.6f}  "
                            f"({res['time_s']:.3f} s; stored {res['stored_time_s']:.3f} s)  ")
                    if res["match"]:
                        line += "[OK] identical to the stored row"
                    else:
                        line += "[MISMATCH] " + ", ".join(
                            f"{n} stored {x['stored']!r} (diff {x['difference']:+.6g})"
                            for n, x in f.items() if not x["match"])
                    add(line)
    add("")
    bad = [c for c in rep["checks"] if c["status"] == MISMATCH]
    notes = [c for c in rep["checks"] if c["status"] == INFO]
    for c in notes:
        add(f"note: {c['detail']}")
    n_ok = sum(c["status"] == OK for c in rep["checks"])
    if bad:
        add(f"RESULT: MISMATCH -- {len(bad)} of {len(rep['checks'])} checks failed:")
        for c in bad:
            add(f"  - {c['name']}: {c['detail']}")
    else:
        skipped = sum(c["status"] == SKIPPED for c in rep["checks"])
        add(f"RESULT: OK -- {n_ok} checks passed" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(L)


__all__ = ["AuditError", "run_audit", "build_report", "validate_report", "format_text", "compact_indices",
           "choose_images", "dvc_record"]
