"""Paper vs. reproduced: every rendered table of a CIFAR-10 / ImageNet experiment next to the paper's numbers.

For each table whose `paper:` entry names one of the paper's accuracy tables (diffsmooth/paper_tables/), each
of our rows is matched to the paper's row by keys (`TableRow.paper_key`: dataset, architecture, method, family,
extra_data, sigma, sigma', N, m, from the config's `architecture`, `paper_family` and `extra_data`), and
each (row, column) gets: the paper's value, ours, the difference, and our value's 95 % interval over the
certified images -- Clopper-Pearson on k of n for certified accuracy (`metrics.clopper_pearson_interval`;
for envelope rows, of the cell that won the column), a normal approximation of the mean for ACR. A cell is
flagged when the paper's value lies outside that interval (widened by half the printed precision). A cell
whose reproduced side is "−" (a radius beyond what the cell's N can certify at its alpha, the usual case at
small N) is "not comparable": it is counted apart from the cells inside or outside the interval.

Outputs, next to the tables: `<table>.compare.csv` per compared table and `comparison.md` (+ `.html`), a
one-screen summary that also lists the paper's own inconsistencies (diffsmooth/paper_tables/README.md). An experiment
on a dataset the paper does not use (digits) gets a one-sentence `comparison.md` and nothing else.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from . import document, metrics
from .grid import PAPER_DATASET_NAMES, Grid, TableSpec
from .rows import atomic_write_text

LEVEL = 0.95
COLUMNS = ["table", "paper_table", "row", "row_label", "paper_row_id", "column", "paper", "ours", "diff",
           "k", "n", "ci_low", "ci_high", "interval", "inside", "status", "paper_note", "paper_row_note"]

# Cells where the paper disagrees with itself or with its text (diffsmooth/paper_tables/README.md, "Cross-table
# inconsistencies" and "Other observations"; the same cells as tests/test_paper_tables.py's EXCEPTIONS,
# TEXT_EXCEPTIONS and OFF_GRID). (paper table, row_id, column) -> note.
_BEIT_NO_SIGMA1 = ("no row of the paper is its source: Table 11 has no BEiT σ=1.00 row, and the envelope of "
                   "its σ=0.25/0.50 rows is 0.0 beyond radius 1.60")
PAPER_CELL_NOTES = {
    (2, "beit/gaussian", "r1.50"): ("printed 38.4; Table 11's BEiT rows give max(0.0, 36.0) = 36.0 and Section 5.2 "
                                   "says 36.0"),
    (2, "beit/gaussian", "r2.00"): _BEIT_NO_SIGMA1,
    (2, "beit/gaussian", "r2.50"): _BEIT_NO_SIGMA1,
    (2, "beit/gaussian", "r3.00"): _BEIT_NO_SIGMA1,
    (1, "diffsmooth-smoothadv", "r1.00"): ("Section 5.2 says 65.6 at radius 1.0 (that is the extra-data row's r0.50 "
                                          "value); the table prints 41.2"),
    (1, "dds-smoothed", "r1.00"): "Section 5.2 says 55.0 at radius 1.0 (its r0.50 value); the table prints 37.4",
    (1, "dds-smoothed", "r0.25"): "69.9 is not a multiple of 0.2 % (500 images)",
    (6, "dds-smoothed", "r0.25"): "69.9 is not a multiple of 0.2 % (500 images)",
}
for _t, _cols in ((2, ("r0.50", "r1.00", "r1.50", "r2.00", "r3.00")), (7, ("r0.50", "r1.00", "r1.50", "r2.00"))):
    for _c in _cols:
        PAPER_CELL_NOTES[(_t, "beit/dds-standard", _c)] = ("copied from the DDS paper (BEiT-L at 512x512); not a "
                                                           "multiple of 0.2 %")
for _r, _cols in (("beit/diffsmooth-gaussian/N2000-m5", ("r1.50", "r2.00", "r2.50")),
                  ("beit/diffsmooth-gaussian/N1000-m10", ("r1.50", "r2.00")),
                  ("beit/diffsmooth-gaussian/N500-m20", ("r1.50", "r2.00"))):
    for _c in _cols:
        PAPER_CELL_NOTES[(7, _r, _c)] = "not a multiple of 0.2 % although 500 images are certified"

# Table-level observations, by the dataset they concern.
PAPER_TABLE_NOTES = {
    "ImageNet": [
        "Appendix B.2 lists BEiT σ' sets only for σ = 0.25 and 0.50, but Table 5 has a BEiT σ = 1.00 block "
        "(σ' 0.12, 0.25, 0.50, 1.00); Table 11 has no BEiT σ = 1.00 row.",
        "Appendix B.1: the σ = 0.25 SmoothAdv model used with DiffSmooth was trained with ε = 64 instead of 512; "
        "Table 9 lists ε = 512 (DNN, 2 steps), and SmoothAdv released no ImageNet ε = 64 model (see config).",
        "Table 2 / Table 7 BEiT DDS(Standard) are the DDS paper's numbers (BEiT-L at 512x512), shown as reported.",
        "Tables 5, 7 and 8 have rows the PDF text misaligned; diffsmooth/paper_tables/README.md gives every reading "
        "(column paper_row_note).",
    ],
    "CIFAR-10": [
        "Table 4 rows 10-15 and 19-23 were misaligned in the PDF text; diffsmooth/paper_tables/README.md gives "
        "every reading (column paper_row_note).",
    ],
}


NOT_COMPARABLE = "not comparable"  # ours is "−" (beyond what N certifies), the paper's is a number > 0
BOTH_ZERO = "both 0 (beyond N's maximal radius)"  # ours is "−", the paper prints 0.0


def in_paper(grid: Grid) -> bool:
    return grid.config["dataset"]["name"] in PAPER_DATASET_NAMES


def paper_number(grid: Grid, spec: TableSpec) -> int | None:
    """The paper's accuracy-table number a table reproduces, or None (no `paper:`, or a figure)."""
    from . import paper

    name = grid.config["tables"].get(spec.id, {}).get("paper")
    if not name:
        return None
    try:
        n = paper.table_number(name)
    except ValueError:
        return None
    return n if n in paper.ACCURACY_TABLES else None


def compared_tables(grid: Grid) -> list:
    """Table ids that get a `<id>.compare.csv` (empty for a dataset the paper does not use)."""
    if not in_paper(grid):
        return []
    return [spec.id for spec in grid.tables if paper_number(grid, spec) is not None]


def comparison_outputs(grid: Grid, out_dir) -> list:
    out_dir = Path(out_dir)
    return ([out_dir / f"{tid}.compare.csv" for tid in compared_tables(grid)]
            + [out_dir / "comparison.md", out_dir / "comparison.html"])


def _paper_column(header_col: str) -> str:
    return "acr" if header_col == "ACR" else f"r{float(header_col):.2f}"


def _match(df, key: dict):
    from . import paper

    if "row_id" in key:
        return df[df["row_id"] == key["row_id"]]
    return paper.select(df, **key)


def _acr_interval(rows) -> tuple[float, float]:
    """Normal-approximation interval of the mean per-image certified radius (0 for wrong/abstained)."""
    contrib = (rows["radius"].astype(float) * (rows["correct"] == 1)).to_numpy()
    n = len(contrib)
    mean = float(contrib.mean())
    sd = float(contrib.std(ddof=1)) if n > 1 else 0.0
    half = 1.959963984540054 * sd / math.sqrt(n)
    return max(0.0, mean - half), mean + half


def compare_table(grid: Grid, spec: TableSpec, rendered, cache) -> list:
    """One dict per (row, column): ours vs. the paper's (see COLUMNS); paper rows we lack come last."""
    from . import paper

    number = paper_number(grid, spec)
    df = paper.load_paper_table(number)
    dataset = PAPER_DATASET_NAMES[grid.config["dataset"]["name"]]
    df = df[df["dataset"] == dataset]
    nkeys = len(spec.key_columns)
    out, matched = [], set()
    for i, (row, (labels, values)) in enumerate(zip(spec.rows, rendered.rows), start=1):
        label = " | ".join(x for x in labels if x)
        hits = _match(df, row.paper_key) if row.paper_key else df.iloc[0:0]
        if len(hits) > 1:
            raise ValueError(f"{spec.id} row {i} ({label}) matches {len(hits)} rows of the paper's Table {number} "
                             f"({list(hits['row_id'])}): give the models distinct paper keys "
                             "(architecture, paper_family, extra_data)")
        prow = hits.iloc[0] if len(hits) == 1 else None
        if prow is not None:
            if prow["row_id"] in matched:
                raise ValueError(f"{spec.id} row {i} ({label}) matches the paper's row {prow['row_id']!r} of Table "
                                 f"{number}, which an earlier row already matched: give the models distinct "
                                 "paper keys (architecture, paper_family, extra_data)")
            matched.add(prow["row_id"])
        for col, v in zip(rendered.header[nkeys:], values):
            rec = dict.fromkeys(COLUMNS, "")
            rec.update(table=spec.id, paper_table=number, row=i, row_label=label, column=col, ours=v.text)
            pcol = _paper_column(col)
            if prow is None:
                rec["status"] = "no paper row"
            else:
                rec["paper_row_id"] = prow["row_id"]
                rec["paper_row_note"] = prow.get("note", "") or ""
                rec["paper_note"] = PAPER_CELL_NOTES.get((number, prow["row_id"], pcol), "")
                _fill(rec, v, prow, pcol, cache, grid)
            out.append(rec)
    for _, prow in df.iterrows():  # the paper's rows this experiment does not reproduce
        if prow["row_id"] in matched:
            continue
        rec = dict.fromkeys(COLUMNS, "")
        rec.update(table=spec.id, paper_table=number, row="", row_label=prow["label"], paper_row_id=prow["row_id"],
                   status="not reproduced", paper_row_note=prow.get("note", "") or "")
        out.append(rec)
    return out


def _fill(rec: dict, v, prow, pcol: str, cache, grid) -> None:
    acr = pcol == "acr"
    if pcol not in prow.index:
        rec["status"] = "column not in paper"
        return
    p = prow[pcol]
    p = None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p)
    rec["paper"] = "" if p is None else (f"{p:.3f}" if acr else f"{p:.1f}")
    if v.source == "reported":
        rec["status"] = "reported"
        return
    if p is None:
        rec["status"] = "paper '-'"
        return
    if v.number is None:  # no image can reach this radius with the cell's N: nothing to test the paper against
        rec["interval"] = "none: radius beyond N's maximum"
        rec["status"] = BOTH_ZERO if p == 0.0 else NOT_COMPARABLE
        return
    rec["diff"] = f"{v.number - p:+.3f}" if acr else f"{v.number - p:+.1f}"
    if acr:
        from .grid import cell_id

        cell = next(c for c in grid.cells if cell_id(c) == v.cell)
        lo, hi = _acr_interval(cache.get(cell))
        rec.update(n=v.n, ci_low=f"{lo:.3f}", ci_high=f"{hi:.3f}", interval="normal (mean radius)")
        inside = lo - 5e-4 <= p <= hi + 5e-4
    else:
        lo, hi = metrics.clopper_pearson_interval(v.k, v.n, LEVEL)
        rec.update(k=v.k, n=v.n, ci_low=f"{100 * lo:.2f}", ci_high=f"{100 * hi:.2f}", interval="clopper-pearson")
        inside = 100 * lo - 0.05 <= p <= 100 * hi + 0.05
    rec["inside"] = "yes" if inside else "NO"
    rec["status"] = "compared"


def to_csv(records: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    return buf.getvalue()


def summary_document(grid: Grid, per_table: dict) -> document.Document:
    """One screen: counts per table, the largest deviations, and the paper's own inconsistencies."""
    dataset = PAPER_DATASET_NAMES[grid.config["dataset"]["name"]]
    allrec = [r for recs in per_table.values() for r in recs]
    comp = [r for r in allrec if r["status"] == "compared"]
    inside = sum(r["inside"] == "yes" for r in comp)
    beyond = [r for r in allrec if r["status"] in (NOT_COMPARABLE, BOTH_ZERO)]
    doc = document.Document("comparison")
    doc.heading(1, f"Paper vs. reproduced: {grid.experiment} ({dataset})")
    doc.paragraph(("b", f"{inside} of {len(comp)} compared cells"),
                  f" lie inside our 95 % interval, {len(comp) - inside} outside (Clopper-Pearson on k of n "
                  "certified images for accuracies, normal approximation for ACR; per cell in ",
                  ("code", "<table>.compare.csv"), "). "
                  f"{sum(r['status'] == NOT_COMPARABLE for r in allrec)} cells are not comparable: our side is "
                  "\"−\", a radius beyond what the cell's N can certify, where the paper prints a number "
                  f"(another {sum(r['status'] == BOTH_ZERO for r in allrec)} are \"−\" here and 0.0 there).")
    rows = []
    for tid, recs in per_table.items():
        c = [r for r in recs if r["status"] == "compared"]
        rows.append([tid, f"Table {recs[0]['paper_table']}" if recs else "",
                     str(len({r['row'] for r in recs if r['paper_row_id'] and r['row'] != ''})),
                     str(len(c)), str(sum(r["inside"] == "yes" for r in c)), str(sum(r["inside"] == "NO" for r in c)),
                     str(sum(r["status"] in (NOT_COMPARABLE, BOTH_ZERO) for r in recs)),
                     str(sum(r["status"] == "reported" for r in recs)),
                     str(sum(r["status"] not in ("compared", "reported", NOT_COMPARABLE, BOTH_ZERO) for r in recs))])
    doc.table(["table", "paper", "rows matched", "compared", "inside", "outside", "not comparable (ours −)",
               "reported", "not compared"], rows)
    figs = [s.id for s in grid.tables if s.id not in per_table]
    if figs:
        doc.paragraph(f"Not compared (no transcribed numbers in the paper): {', '.join(figs)}.")

    def distance(r) -> float:  # how far outside, in interval widths (so ACR and accuracy rank together)
        lo, hi, p = float(r["ci_low"]), float(r["ci_high"]), float(r["paper"])
        return max(lo - p, p - hi) / max(hi - lo, 1e-3)

    outside = sorted((r for r in comp if r["inside"] == "NO"), key=lambda r: -distance(r))
    if outside:
        doc.paragraph("Largest deviations outside the interval:")
        doc.table(["table", "row", "column", "paper", "ours", "95 % interval"],
                  [[r["table"], r["row_label"].replace(" | ", ", "), r["column"], r["paper"], r["ours"],
                    f"[{r['ci_low']}, {r['ci_high']}]"] for r in outside[:8]])
    if beyond and not comp:
        doc.paragraph(f"Every cell with a number on both sides is beyond what N = "
                      f"{', '.join(sorted({f'{c.N:,}' for c in grid.cells}))} can certify: raise `certify.N` "
                      "to compare.")
    doc.heading(2, "The paper's own inconsistencies (diffsmooth/paper_tables/README.md)")
    present = {(r["paper_table"], r["paper_row_id"]) for recs in per_table.values() for r in recs}
    grouped: dict = {}  # (table, note) -> {row_id: [columns]}
    for (t, rid, col), note in PAPER_CELL_NOTES.items():
        if (t, rid) in present:
            grouped.setdefault((t, note), {}).setdefault(rid, []).append(col)
    items = []
    for (t, note), by_row in grouped.items():
        spans = [f"Table {t} "]
        for k, (rid, cols) in enumerate(by_row.items()):
            spans += (["; "] if k else []) + [("code", rid), f" {', '.join(cols)}"]
        items.append(spans + [f": {note}"])
    items += [[note] for note in PAPER_TABLE_NOTES.get(dataset, [])]
    if items:
        doc.bullets(items)
    return doc


NOT_IN_PAPER = ("The {exp} experiment certifies {dataset}, a dataset the paper does not evaluate (it reports "
                "CIFAR-10 and ImageNet only), so there are no paper numbers to compare with.")


def compare_all(grid: Grid, rendered: dict, cache) -> dict:
    """table id -> its comparison records (compare_table), for every compared table ({} off the paper)."""
    if not in_paper(grid):
        return {}
    return {spec.id: compare_table(grid, spec, rendered[spec.id], cache)
            for spec in grid.tables if spec.id in compared_tables(grid)}


def write_comparison(grid: Grid, per_table: dict, out_dir) -> list:
    """Write `<table>.compare.csv` per compared table and `comparison.md`/`.html`; returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for tid, recs in per_table.items():
        path = out_dir / f"{tid}.compare.csv"
        atomic_write_text(path, to_csv(recs))
        written.append(path)
    if in_paper(grid):
        doc = summary_document(grid, per_table)
    else:
        doc = document.Document("comparison").paragraph(
            NOT_IN_PAPER.format(exp=grid.experiment, dataset=grid.config["dataset"]["name"]))
    for name, text in (("comparison.md", document.to_markdown(doc)), ("comparison.html", document.to_html(doc))):
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
