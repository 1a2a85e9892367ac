"""Everything `diffsmooth tables` writes for one experiment, in one pass over the per-image rows: per table
its Markdown, LaTeX, HTML and cell index (`tables`), its certified-accuracy-vs-radius plot with the paper's
values as markers (`plots`), Figure 3, and the paper-vs-reproduced comparison (`compare`); and, from the
same rendered values, DVC's metrics (results/<experiment>/metrics.json) and plot data (plots/<table>.csv).

This module is the only one that imports both `tables` and `compare`, so neither imports the other.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from . import compare, plots
from .grid import Grid
from .paths import Layout, contained
from .rows import atomic_write_text
from .tables import RowCache, compute_table, renderings

PLOTTED_STATUSES = ("compared", compare.NOT_COMPARABLE, compare.BOTH_ZERO)


def paper_points(records: list) -> dict:
    """Row index (0-based) -> [(radius, the paper's value)] of a table's comparison records."""
    out: dict = {}
    for r in records:
        if r["status"] in PLOTTED_STATUSES and r["column"] != "ACR" and r["paper"] != "" and r["row"] != "":
            out.setdefault(int(r["row"]) - 1, []).append((float(r["column"]), float(r["paper"])))
    return out


def _computed_rows(t) -> list:
    """(row label, {column: number}) of a rendered table's computed rows, as rendered: reported rows (the
    paper's numbers) left out, "−" cells omitted. Labels join the key columns; a repeated one gets " #k"."""
    out, seen = [], {}
    columns = t.header[len(t.spec.key_columns):]
    for labels, values in t.rows:
        if all(v.source == "reported" for v in values):
            continue
        label = " · ".join(x for x in labels if x) or "row"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} #{seen[label]}"
        out.append((label, {c: v.number for c, v in zip(columns, values) if v.number is not None}))
    return out


def dvc_metrics(rendered: dict) -> dict:
    """{table id: {row label: {"ACR": x, "0.25": y, ...}}}: DVC's metrics, the numbers the tables show
    (certified accuracy in percent, one decimal; ACR with three)."""
    return {tid: dict(_computed_rows(t)) for tid, t in rendered.items()}


def plot_csv(t) -> str:
    """Certified accuracy vs. radius of a rendered table, long format (radius, certified_accuracy, row)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["radius", "certified_accuracy", "row"])
    for label, numbers in _computed_rows(t):
        for column, number in numbers.items():
            if column != "ACR":
                w.writerow([column, number, label])
    return buf.getvalue()


def write_dvc_files(grid: Grid, rendered: dict, results) -> list:
    """results/<experiment>/metrics.json and plots/<table>.csv (Layout.metrics, Layout.plots_dir)."""
    layout = Layout(results, grid.experiment)
    metrics_path = contained(layout.metrics, results)
    atomic_write_text(metrics_path, json.dumps(dvc_metrics(rendered), indent=2, ensure_ascii=False) + "\n")
    written = [metrics_path]
    for tid, t in rendered.items():
        path = contained(layout.plots_dir / f"{tid}.csv", results)
        atomic_write_text(path, plot_csv(t))
        written.append(path)
    for stale in set(layout.plots_dir.glob("*.csv")) - set(written):  # a table no longer in the config
        stale.unlink()
    return written


def render_all(grid: Grid, results, out_dir) -> list:
    out_dir = Path(out_dir)
    cache = RowCache(Path(results), grid.experiment)
    rounding = grid.settings.rounding
    written = []
    rendered = {spec.id: compute_table(grid, spec, cache) for spec in grid.tables}
    per_table = compare.compare_all(grid, rendered, cache)  # raises before any file is written
    for spec in grid.tables:
        t = rendered[spec.id]
        base = out_dir / spec.id
        for suffix, text in renderings(t, rounding).items():
            atomic_write_text(base.with_name(base.name + suffix), text)
            written.append(base.with_name(base.name + suffix))
        if spec.kind == "m_ladder":
            written += plots.render_figure(grid, spec, cache, base)
        else:
            written += plots.plot_table(grid, t, cache, base, paper_points(per_table.get(spec.id, [])))
    written += compare.write_comparison(grid, per_table, out_dir)
    written += write_dvc_files(grid, rendered, results)
    return written
