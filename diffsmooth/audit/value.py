"""Table position -> value: the number at (table, row, column), as the renderer computes it, explained.

The value is read from `tables.compute_table` (the code that rendered it) over a `tables.RowCache`; this
module only finds the position, explains the formula with the same rows, and compares with `cells.csv`
and the Markdown cell.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .. import metrics, tables
from ..cell import cell_id
from ..grid import Grid, TableSpec, max_certifiable_radius
from ..paths import Layout
from .checks import INFO, MISMATCH, SKIPPED, AuditError, Checks

DASH = tables.DASH


def table_spec(grid: Grid, table: str) -> TableSpec:
    ids = [t.id for t in grid.tables]
    text = str(table).strip().lower().replace(" ", "")
    for cand in (text, f"table{text}", text.replace("tab.", "table")):
        if cand in ids:
            return next(t for t in grid.tables if t.id == cand)
    raise AuditError(f"no table {table!r} in experiment {grid.experiment!r}: use one of {', '.join(ids)}")


def compute(grid: Grid, spec: TableSpec, cache: tables.RowCache) -> tables.RenderedTable:
    try:
        return tables.compute_table(grid, spec, cache)
    except FileNotFoundError as e:  # a cell's rows, or the paper's data of a reported row
        raise AuditError(f"cannot recompute {spec.id} from the rows: {e}; run `snakemake -c2 all_tables "
                         "--configfile <config>` (or `diffsmooth merge` for the cell named)") from None


def read_cells_csv(results: Path, grid: Grid, table_id: str) -> list[dict]:
    path = Layout(results, grid.experiment).tables_dir / f"{table_id}.cells.csv"
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
    """A row number, or a row label written loosely, -> the 1-based row of `entries` (row, row_label)."""
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


def markdown_value(path: Path, row: int, column: str) -> str | None:
    """The text of one cell of a rendered Markdown table (bold removed), or None when unreadable."""
    if not path.exists():
        return None
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("|")]
    if len(lines) < 2 + row:
        return None
    split = lambda ln: [x.strip() for x in ln.strip().strip("|").split("|")]  # noqa: E731
    header, body = split(lines[0]), split(lines[1 + row])
    if column not in header or len(body) != len(header):
        return None
    return body[header.index(column)].replace("**", "")


def _label(rendered_labels) -> str:
    return " | ".join(x for x in rendered_labels if x)


def _candidate(cell, v: tables.Value) -> dict:
    note = "" if v.number is not None else (
        f"r > {tables.radius_limit(cell):.4f}, the largest radius shown for N={cell.N}, alpha={cell.alpha:g}")
    return {"cell_id": cell_id(cell), "method": cell.method, "classifier": cell.classifier, "sigma": cell.sigma,
            "sigma_local": cell.sigma_local, "m": cell.m, "N": cell.N, "value": v.text, "k": v.k, "n": v.n,
            "note": note}


def audit_value(results: Path, grid: Grid, table: str, row: str, column: str, checks: Checks,
                cache: tables.RowCache):
    """(target, value, the audited cell or None, the recomputed RenderedTable) for one table position."""
    spec = table_spec(grid, table)
    entries = read_cells_csv(results, grid, spec.id)
    t = compute(grid, spec, cache)
    nkeys = len(spec.key_columns)
    rows = [{"row": i, "row_label": _label(labels)} for i, (labels, _) in enumerate(t.rows, start=1)]
    row_n = _resolve_row(rows, row, spec.id)
    col = _resolve_column(t.header[nkeys:], column, spec.id)
    v = t.rows[row_n - 1][1][t.header.index(col) - nkeys]
    trow, label = spec.rows[row_n - 1], rows[row_n - 1]["row_label"]
    entry = next((e for e in entries if e.get("row") == str(row_n) and e.get("column") == col), None)
    rounding = grid.settings.rounding
    layout = Layout(results, grid.experiment)
    by_id = {cell_id(c): c for c in trow.cells}
    chosen = by_id.get(v.cell)

    target = {"table": spec.id, "row": row_n, "row_label": label, "column": col,
              "cell_id": v.cell, "appears_in": []}
    value = {"kind": None, "source": v.source, "source_file": getattr(v, "source_file", "") or None,
             "rendered": entry["value"] if entry else None,
             "rendered_markdown": markdown_value(layout.tables_dir / f"{spec.id}.md", row_n, col),
             "radius": None if col == "ACR" else float(col), "rounding": None, "k": v.k, "n": v.n,
             "k_reference": None, "k_exact": None, "recomputed": v.text, "matches": False, "formula": "",
             "envelope": None, "cell_id": v.cell}

    if v.source == "reported":
        value.update(kind="reported", formula=(
            f"the paper's own number (diffsmooth/paper_tables/, table {tables.paper_table_of(grid, spec)}, row {trow.paper_row}), "
            "shown for comparison; this pipeline does not compute it, so there is no cell, no rows and nothing "
            "to re-certify"))
        checks.add("value.reported", INFO, f"{spec.id} row {row_n} is a reported row (the paper's number)")
    elif v.number is None:
        value["kind"] = "dash"
        if col == "ACR":
            value["formula"] = "ACR is not defined for a per-radius maximum row"
        else:
            limits = ", ".join(f"{max_certifiable_radius(c):.4f} (shown up to {tables.radius_limit(c):.4f})"
                               for c in trow.cells)
            value["formula"] = (f"r = {float(col):.2f} exceeds the largest radius the cell's N can certify "
                                f"(sigma * Phi^-1(alpha^(1/N)) = {limits}): shown as {DASH}")
    elif col == "ACR":
        data = cache.get(chosen)
        correct = data["correct"].to_numpy(dtype=int) == 1
        total = float(np.sum(data["radius"].to_numpy(dtype=float)[correct]))
        value.update(kind="acr", rounding="exact", k=int(correct.sum()), formula=(
            f"ACR = (sum of the radii of the {int(correct.sum())} correctly certified images = {total:.6f}) / "
            f"{len(data)} images = {metrics.acr(data):.6f} -> {v.text} (exact radii, MACER's average certified radius)"))
    else:
        r = float(col)
        other = "exact" if rounding == "reference" else "reference"
        k_other = metrics.certified_count(cache.get(chosen), r, other)
        value.update(kind="certified_accuracy", rounding=rounding,
                     k_reference=v.k if rounding == "reference" else k_other,
                     k_exact=v.k if rounding == "exact" else k_other,
                     formula=f"100 * k / n = 100 * {v.k} / {v.n} = {v.text}, k = images with correct = 1 and "
                             f"radius >= {r:.2f} (abstentions count as wrong)")
    if v.candidates and col != "ACR":
        values = tables.candidate_values(cache, trow.cells, float(col), rounding)
        listed = [x for x in ((entry or {}).get("envelope_candidates") or "").split(";") if x]
        value["envelope"] = {"winner": v.cell, "candidates": [_candidate(c, cv) for c, cv in zip(trow.cells, values)],
                             "csv_winner": (entry or {}).get("cell_id") or None, "csv_candidates": listed}

    _compare_with_cells_csv(spec, row_n, col, label, entry, v, value, checks)
    target["cell_id"] = cell_id(chosen) if chosen is not None else None
    return target, value, chosen, t


def _compare_with_cells_csv(spec, row_n, col, label, entry, v, value, checks: Checks) -> None:
    """The recomputed value against the cell index (and the Markdown cell against the cell index)."""
    where = f"{spec.id}.cells.csv"
    if entry is None:
        checks.add("value.recomputed", MISMATCH, f"{where} has no entry for row {row_n}, column {col}: the rendered "
                   "tables are stale; re-render them (`diffsmooth tables --configfile <config>`)")
        return
    checks.ok_if("table.row_label", entry.get("row_label") == label, f"row {row_n} of {where} is the config's row {label!r}",
                 f"row {row_n} of {where} is labelled {entry.get('row_label')!r} but the config's row {row_n} is "
                 f"{label!r}: the rendered tables are stale (re-render them)")
    env = value["envelope"]
    if env and env["csv_candidates"]:
        checks.ok_if("value.envelope_candidates", env["csv_candidates"] == v.candidates,
                     f"{where} lists the row's {len(v.candidates)} candidate cells",
                     f"{where} lists candidates {env['csv_candidates']} but the config's row has {v.candidates}: "
                     "the rendered tables are stale")
    if env and v.cell is not None:
        won = next(c for c in env["candidates"] if c["cell_id"] == v.cell)
        checks.ok_if("value.envelope_winner", env["csv_winner"] == v.cell,
                     f"the winning cell at r = {float(col):.2f} is sigma = {won['sigma']:.2f}, sigma' = "
                     f"{won['sigma_local']:.2f} ({v.cell}), as {where} says",
                     f"the renderer picks {v.cell} from the rows but {where} names {env['csv_winner']!r}")
    value["matches"] = value["recomputed"] == value["rendered"]
    checks.ok_if("value.recomputed", value["matches"],
                 f"recomputed from the rows: {value['recomputed']} = rendered {value['rendered']}",
                 f"rendered {value['rendered']!r} ({where}) but the rows give {value['recomputed']!r}")
    if value["kind"] == "certified_accuracy" and entry.get("k") not in (None, ""):
        checks.ok_if("value.k", entry["k"] == str(v.k) and entry.get("n") == str(v.n),
                     f"k = {v.k}, n = {v.n} as in {where}",
                     f"{where} says k = {entry['k']}, n = {entry.get('n')}; the rows give k = {v.k}, n = {v.n}")
    md = value["rendered_markdown"]
    if md is None:
        checks.add("value.markdown", SKIPPED, f"{spec.id}.md not found, or it has no row {row_n} / column {col}")
    else:
        checks.ok_if("value.markdown", md == value["rendered"], f"{spec.id}.md shows {md}",
                     f"{spec.id}.md shows {md!r} but {where} says {value['rendered']!r}")
    if env is None and v.cell and entry.get("cell_id"):
        checks.ok_if("value.cell_id", entry["cell_id"] == v.cell, f"{where} names the config's cell",
                     f"{where} names {entry['cell_id']} but the config's row uses {v.cell}")


def appearances(results: Path, grid: Grid, cid: str) -> list[dict]:
    """Where a cell's numbers are shown: (table, row, column, value) of every rendered cell index."""
    out = []
    for spec in grid.tables:
        path = Layout(results, grid.experiment).tables_dir / f"{spec.id}.cells.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            for e in csv.DictReader(f):
                if e.get("cell_id") == cid:
                    out.append({"table": spec.id, "row": int(e["row"]), "row_label": e["row_label"],
                                "column": e["column"], "value": e["value"]})
    return out
