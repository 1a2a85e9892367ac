"""Certified accuracy vs. ℓ2 radius: one plot per table (`<table>.plot.png/.pdf`, the paper's values as
markers where the table is compared) and the paper's Figure 3 (`figure3.png/.pdf`, one curve per m).

Curves are drawn on a 0.01 radius grid from the per-image rows (`metrics.certified_accuracy_curve`;
envelope rows take the per-radius maximum over their cells, `metrics.envelope`). Every panel of a
figure shares both axes, as the paper's Figure 3 does. PNG and PDF carry no timestamp or software
version, so the same rows give byte-identical files.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from . import metrics
from .grid import Grid, TableSpec, max_certifiable_radius
from .rows import atomic_write_bytes

STEP = 0.01
X_LABEL = r"$\ell_2$ radius $r$"
Y_LABEL = "certified accuracy (%)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid_to(stop: float) -> list:
    return [k * STEP for k in range(int(round(stop / STEP)) + 1)]


def _save(fig, out_base: Path, suffix: str = "") -> list:
    written = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        meta = {"CreationDate": None, "Producer": None, "Creator": None} if ext == "pdf" else {"Software": None}
        fig.savefig(buf, format=ext, dpi=120, metadata=meta, bbox_inches="tight")  # legends outside the axes
        path = out_base.with_name(f"{out_base.name}{suffix}.{ext}")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def _colour(k: int, n: int):
    import matplotlib

    return matplotlib.colormaps["tab10" if n <= 10 else "tab20"](k % 20)


def _panel_grid(plt, n: int, width: float = 4.2, height: float = 3.2):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             sharex=True, sharey=True)
    flat = [ax for line in axes for ax in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat:  # shared axes: labels on the outer panels only
        ax.tick_params(labelbottom=True)
    return fig, axes, flat[:n]


def _style(ax, title: str, first_column: bool, bottom: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if first_column:
        ax.set_ylabel(Y_LABEL)
    if bottom:
        ax.set_xlabel(X_LABEL)


def plot_table(grid: Grid, t, cache, out_base: Path, paper_points: dict | None = None) -> list:
    """`<table>.plot.png/.pdf`: one panel per block of rows (the blocks the bold rule compares), one curve per
    computed row; `paper_points`: row index (0-based) -> [(radius, paper value %)], drawn as hollow markers
    in the row's colour; reported rows (the paper's own numbers) as crosses. Returns the written paths."""
    from .tables import block_columns, block_key

    plt = _pyplot()
    spec: TableSpec = t.spec
    rounding = grid.settings.rounding
    paper_points = paper_points or {}
    blocks: dict = {}
    for i, (labels, _) in enumerate(t.rows):
        blocks.setdefault(block_key(spec, labels), []).append(i)
    stop = max(spec.radii) if spec.radii else 1.0
    radii = _grid_to(stop)
    long_legend = max(len(m) for m in blocks.values()) > 4
    fig, axes, panels = _panel_grid(plt, len(blocks), width=7.0 if long_legend else 4.2)
    ncols = len(axes[0])
    for p, (ax, (key, members)) in enumerate(zip(panels, blocks.items())):
        for colour, i in enumerate(members):
            labels, _ = t.rows[i]
            row = spec.rows[i]
            name = ", ".join(f"{k} = {x}" if k in ("σ", "σ'", "m") else x
                             for k, x in zip(spec.key_columns, labels) if x and k not in block_columns(spec))
            name = name or ", ".join(x for x in labels if x)
            c = _colour(colour, len(members))
            if row.source == "reported":
                pts = [(r, v.number) for r, v in zip(spec.radii, t.rows[i][1][-len(spec.radii):])
                       if v.number is not None]
                if pts:
                    ax.plot(*zip(*pts), "x", color=c, label=name)
                continue
            curves = [[100 * a for a in metrics.certified_accuracy_curve(cache.get(cell), radii, rounding)]
                      for cell in row.cells]
            ax.plot(radii, metrics.envelope(curves), color=c, label=name, linewidth=1.4)
            pts = paper_points.get(i)
            if pts:
                ax.plot(*zip(*pts), "o", mfc="none", color=c, markersize=5)
        title = ", ".join(f"{k} = {x}" if k in ("σ", "σ'") else str(x)
                          for k, x in zip(block_columns(spec), key) if x)
        _style(ax, title, p % ncols == 0, p >= len(panels) - ncols)
        if long_legend:  # a long legend goes beside the panel, not over the curves
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        else:
            ax.legend(fontsize=7, loc="lower left")  # decreasing curves leave that corner empty
    ax0 = panels[0]
    ax0.set_xlim(0, stop)
    ax0.set_ylim(0, 100)
    note = "lines: reproduced from the per-image rows" + ("; o: the paper's values" if paper_points else "") + (
        "; x: rows the paper reports from other work" if any(r.source == "reported" for r in spec.rows) else "")
    fig.suptitle(f"{spec.id}: certified accuracy vs. radius\n{note}", fontsize=10)
    fig.tight_layout()
    written = _save(fig, out_base, ".plot")
    plt.close(fig)
    return written


def render_figure(grid: Grid, spec: TableSpec, cache, out_base: Path) -> list:
    """Figure 3: certified accuracy vs. radius, one curve per m, one panel per (model, sigma, sigma'), one
    y-axis (and x-axis) for all panels like the paper's."""
    plt = _pyplot()
    panels: dict = {}
    for row in spec.rows:  # one figure row per (architecture, model), one panel per (sigma, sigma')
        line = (row.labels.get("Architecture", ""), row.labels["Model"])
        panels.setdefault(line, {}).setdefault((row.labels["σ"], row.labels["σ'"]), []).append(row)
    ncols = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(len(panels), ncols, figsize=(4 * ncols, 3.2 * len(panels)), squeeze=False,
                             sharex=True, sharey=True)
    rounding = grid.settings.rounding
    for line_axes, by_pair in zip(axes, panels.values()):
        for ax in line_axes[len(by_pair):]:
            ax.set_visible(False)
    stop = max(max_certifiable_radius(row.cells[0]) for row in spec.rows)
    for r_i, (line_axes, ((a, model), by_pair)) in enumerate(zip(axes, panels.items())):
        for c_i, (ax, ((s, sl), rows)) in enumerate(zip(line_axes, by_pair.items())):
            for row in rows:
                cell = row.cells[0]
                radii = _grid_to(math.floor(max_certifiable_radius(cell) / STEP) * STEP)
                acc = metrics.certified_accuracy_curve(cache.get(cell), radii, rounding)
                ax.plot(radii, [100 * x for x in acc], label=f"m = {row.labels['m']}")
            ax.tick_params(labelbottom=True, labelleft=True)
            _style(ax, f"{a + ' ' if a else ''}{model}, σ = {s}, σ' = {sl}", c_i == 0, True)
            ax.legend(fontsize=8, loc="lower left")
    axes[0][0].set_xlim(0, stop)
    axes[0][0].set_ylim(0, 100)
    fig.tight_layout()
    written = _save(fig, out_base)
    plt.close(fig)
    return written
