"""Aggregate per-cell rows into the paper's table shapes and render them (Markdown, LaTeX, HTML, cell index).

Every computed number comes from per-image rows through `metrics`: certified accuracy in percent with
one decimal, ACR with three, "−" where a radius is beyond what the cell's N can certify, the best value
per column (within a block of rows) in bold. Envelope rows (Tables 1/2/6/7) show the per-radius
maximum over their cells and remember which cell won each radius, so an audit can follow it.
Reported rows (MACER, Consistency, ... in Tables 1/2) are the paper's own numbers (data/paper/), labelled
"(reported)" and marked `source = reported` in the cell index; they are never computed.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics
from .grid import Grid, TableSpec, cell_id, max_certifiable_radius
from .rows import atomic_write_bytes, atomic_write_text, read_rows

DASH = "−"


@dataclass
class Value:
    """One rendered number and where it came from."""
    text: str  # as rendered, without bold
    number: float | None  # None for "−"
    cell: str | None = None  # the cell id it was read from (the winning one for envelopes)
    k: int | None = None  # images certified at this radius (None for ACR)
    n: int | None = None  # images in the cell
    candidates: list = field(default_factory=list)  # envelope: all cell ids compared
    source: str = "computed"  # or "reported": the paper's number, copied from data/paper/


@dataclass
class RenderedTable:
    spec: TableSpec
    header: list
    rows: list  # list of (labels list, values list of Value)
    bold: list  # list of sets of value-column indices in bold, per row


class RowCache:
    def __init__(self, results: Path, experiment: str):
        self.results, self.experiment, self._rows = Path(results), experiment, {}

    def get(self, cell):
        cid = cell_id(cell)
        if cid not in self._rows:
            self._rows[cid] = read_rows(self.results / self.experiment / "cells" / cid / "rows.tsv")
        return self._rows[cid]


def _accuracy_value(cache, cell, r, rounding) -> Value:
    if r > _radius_limit(cell):
        return Value(DASH, None, cell_id(cell))
    rows = cache.get(cell)
    k = metrics.certified_count(rows, r, rounding)
    return Value(f"{100 * k / len(rows):.1f}", round(100 * k / len(rows), 1), cell_id(cell), k, len(rows))


def _radius_limit(cell) -> float:
    # a rendered radius r is certifiable when some row could reach it (3-digit rounding may lift it slightly)
    return max_certifiable_radius(cell) * (1 + 5e-3)


def paper_table_of(grid: Grid, spec: TableSpec) -> str | None:
    """The `paper:` entry of a table (e.g. "table04", "figure3"), or None."""
    return grid.config["tables"].get(spec.id, {}).get("paper")


def _reported_values(grid: Grid, spec: TableSpec, row) -> list:
    """A reported row's values: the paper's numbers at this table's columns ("−" where it has none)."""
    from . import paper

    df = paper.load_paper_table(paper_table_of(grid, spec))
    prow = paper.row(df, row.paper_row)
    values = []
    columns = (["acr"] if spec.show_acr else []) + [paper.radius_column(r) for r in spec.radii]
    for col in columns:
        x = prow.get(col)
        if x is None or (isinstance(x, float) and x != x):
            values.append(Value(DASH, None, source="reported"))
        else:
            x = float(x)
            values.append(Value(f"{x:.3f}" if col == "acr" else f"{x:.1f}", x, source="reported"))
    return values


def compute_table(grid: Grid, spec: TableSpec, cache: RowCache) -> RenderedTable:
    rounding = grid.config["certify"]["rounding"]
    radius_cols = [f"{r:.2f}" for r in spec.radii]
    header = spec.key_columns + (["ACR"] if spec.show_acr else []) + radius_cols
    out_rows = []
    for row in spec.rows:
        labels = [row.labels.get(k, "") for k in spec.key_columns]
        if row.source == "reported":
            out_rows.append((labels, _reported_values(grid, spec, row)))
            continue
        values = []
        if spec.show_acr:
            if len(row.cells) == 1:
                rows = cache.get(row.cells[0])
                a = metrics.acr(rows)
                values.append(Value(f"{a:.3f}", round(a, 3), cell_id(row.cells[0]), None, len(rows)))
            else:
                values.append(Value(DASH, None))
        for r in spec.radii:
            cands = [_accuracy_value(cache, c, r, rounding) for c in row.cells]
            numeric = [v for v in cands if v.number is not None]
            if not numeric:
                best = Value(DASH, None)
            else:  # the first cell (config order) wins ties, so the choice is deterministic
                best = max(numeric, key=lambda v: v.number)
            if len(row.cells) > 1:
                best = Value(best.text, best.number, best.cell, best.k, best.n, [cell_id(c) for c in row.cells])
            values.append(best)
        out_rows.append((labels, values))
    return RenderedTable(spec, header, out_rows, _bold(spec, out_rows))


def _block_key(spec: TableSpec, labels) -> tuple:
    """Rows compared for bold: the paper bolds per (method, sigma) block in Tables 4/5/8/11/12."""
    keys = dict(zip(spec.key_columns, labels))
    if spec.kind in ("diffsmooth", "diffsmooth_noshift"):
        return (keys.get("Architecture"), keys.get("Method"), keys.get("σ"))
    if spec.kind == "rs":
        return (keys.get("Architecture"), keys.get("Method"))
    if spec.kind == "m_ladder":
        return (keys.get("Model"), keys.get("σ"), keys.get("σ'"))
    return (keys.get("Architecture"),)


def _bold(spec, out_rows) -> list:
    blocks: dict = {}
    for i, (labels, _) in enumerate(out_rows):
        blocks.setdefault(_block_key(spec, labels), []).append(i)
    bold = [set() for _ in out_rows]
    ncols = len(out_rows[0][1]) if out_rows else 0
    for members in blocks.values():
        if len(members) < 2:
            continue
        for j in range(ncols):
            nums = [out_rows[i][1][j].number for i in members if out_rows[i][1][j].number is not None]
            if not nums:
                continue
            best = max(nums)
            for i in members:
                if out_rows[i][1][j].number == best:
                    bold[i].add(j)
    return bold


REPORTED_NOTE = ("Rows marked (reported) show the paper's own numbers (data/paper/), "
                 "copied for comparison; this pipeline does not compute them.")


def _has_reported(t: RenderedTable) -> bool:
    return any(v.source == "reported" for _, values in t.rows for v in values)


def to_markdown(t: RenderedTable) -> str:
    from tabulate import tabulate

    body = []
    for (labels, values), bold in zip(t.rows, t.bold):
        body.append(labels + [f"**{v.text}**" if j in bold else v.text for j, v in enumerate(values)])
    nkeys = len(t.spec.key_columns)
    align = ["left"] * nkeys + ["right"] * (len(t.header) - nkeys)
    table = tabulate(body, headers=t.header, tablefmt="pipe", colalign=align, disable_numparse=True)
    title = f"**{t.spec.id}**: {t.spec.title}\n\n" if t.spec.title else f"**{t.spec.id}**\n\n"
    note = f"\n{REPORTED_NOTE}\n" if _has_reported(t) else ""
    return title + table + "\n" + note


_TEX = {"σ": r"$\sigma$", "σ'": r"$\sigma'$", DASH: "--", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#"}


def _tex(text: str) -> str:
    if text in _TEX:
        return _TEX[text]
    for a, b in (("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("σ'", r"$\sigma'$"), ("σ", r"$\sigma$")):
        text = text.replace(a, b)
    return text


def to_latex(t: RenderedTable) -> str:
    nkeys = len(t.spec.key_columns)
    spec = "l" * nkeys + "r" * (len(t.header) - nkeys)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_tex(h) for h in t.header) + r" \\", r"\midrule"]
    for (labels, values), bold in zip(t.rows, t.bold):
        cells = [_tex(x) for x in labels] + [
            (r"\textbf{" + _tex(v.text) + "}") if j in bold else _tex(v.text) for j, v in enumerate(values)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if _has_reported(t):
        lines.append("% " + REPORTED_NOTE)
    return "\n".join(lines) + "\n"


def markdown_to_html(md: str, title: str) -> str:
    """A standalone HTML page for the Markdown this module writes (headings, paragraphs, bullet lists,
    pipe tables, **bold**, `code`): what the Snakemake report shows, since it does not render Markdown."""
    import html
    import re

    def inline(text: str) -> str:
        text = html.escape(text, quote=False)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    def cells(line: str) -> list:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            rule = cells(block[1]) if len(block) > 1 else []
            right = [c.endswith(":") and not c.startswith(":") for c in rule]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells(block[0])) + "</tr>")
            for b in block[2:]:
                tds = [f'<td class="num">{inline(c)}</td>' if j < len(right) and right[j] else f"<td>{inline(c)}</td>"
                       for j, c in enumerate(cells(b))]
                out.append("<tr>" + "".join(tds) + "</tr>")
            out.append("</table>")
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;margin:.5em 0}"
             "th,td{border:1px solid #bbb;padding:2px 6px}th{background:#eee}td.num{text-align:right}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title><style>"
            + style + "</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def to_html(t: RenderedTable) -> str:
    return markdown_to_html(to_markdown(t), t.spec.id)


def cell_index(t: RenderedTable, rounding: str) -> str:
    """Machine-readable map (table, row, column) -> value and the cell that produced it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "row_label", "column", "value", "source", "cell_id", "k", "n", "rounding",
                "envelope_candidates"])
    nkeys = len(t.spec.key_columns)
    for i, (labels, values) in enumerate(t.rows, start=1):
        for j, v in enumerate(values):
            col = t.header[nkeys + j]
            w.writerow([t.spec.id, i, " | ".join(x for x in labels if x), col, v.text, v.source,
                        v.cell or "", "" if v.k is None else v.k, "" if v.n is None else v.n,
                        "" if col == "ACR" or v.source == "reported" else rounding, ";".join(v.candidates)])
    return buf.getvalue()


def render_figure(grid: Grid, spec: TableSpec, cache: RowCache, out_base: Path) -> list:
    """Figure 3: certified accuracy vs. radius, one curve per m, one panel per (model, sigma, sigma')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict = {}
    for row in spec.rows:  # one figure row per (architecture, model), one panel per (sigma, sigma')
        line = (row.labels.get("Architecture", ""), row.labels["Model"])
        panels.setdefault(line, {}).setdefault((row.labels["σ"], row.labels["σ'"]), []).append(row)
    ncols = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(len(panels), ncols, figsize=(4 * ncols, 3.2 * len(panels)), squeeze=False)
    rounding = grid.config["certify"]["rounding"]
    slots = [(ax, (a, mod, s, sl), rows) for line_axes, ((a, mod), by_pair) in zip(axes, panels.items())
             for ax, ((s, sl), rows) in zip(line_axes, by_pair.items())]
    for line_axes, by_pair in zip(axes, panels.values()):
        for ax in line_axes[len(by_pair):]:
            ax.set_visible(False)
    for ax, (a, model, s, sl), rows in slots:
        if a:
            model = f"{a} {model}"
        for row in rows:
            cell = row.cells[0]
            data = cache.get(cell)
            limit = max_certifiable_radius(cell)
            radii = [k * 0.01 for k in range(int(limit / 0.01) + 1)]
            ax.plot(radii, [100 * metrics.certified_accuracy(data, r, rounding) for r in radii],
                    label=f"m = {row.labels['m']}")
        ax.set_title(f"{model}, σ = {s}, σ' = {sl}")
        ax.set_xlabel("ℓ2 radius")
        ax.set_ylabel("certified accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    written = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=120, metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
        path = out_base.with_suffix(f".{ext}")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def render_all(grid: Grid, results, out_dir) -> list:
    out_dir = Path(out_dir)
    cache = RowCache(Path(results), grid.experiment)
    rounding = grid.config["certify"]["rounding"]
    written = []
    rendered = {}
    for spec in grid.tables:
        t = compute_table(grid, spec, cache)
        rendered[spec.id] = t
        base = out_dir / spec.id
        for suffix, text in ((".md", to_markdown(t)), (".tex", to_latex(t)), (".cells.csv", cell_index(t, rounding)),
                             (".html", to_html(t))):
            atomic_write_text(base.with_name(base.name + suffix), text)
            written.append(base.with_name(base.name + suffix))
        if spec.kind == "m_ladder":
            written += render_figure(grid, spec, cache, base)
    from .compare import write_comparison

    written += write_comparison(grid, rendered, cache, out_dir)
    return written
