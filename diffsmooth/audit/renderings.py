"""Every rendered file of a table (md, tex, html, cells.csv) against what the rows give now.

The table is re-rendered in memory by `tables.renderings`, the function that wrote the files, so any
edited number, label or bold mark in any rendering is a mismatch naming the file and its first
differing line; a rendering that is absent is a skipped check, with that reason.
"""
from __future__ import annotations

from pathlib import Path

from .. import tables
from ..grid import Grid
from ..paths import Layout
from .checks import MISMATCH, Checks

FIX = "re-render the tables (`diffsmooth tables --configfile <config>`) if the rows are the ones to trust"


def _excerpt(line: str, at: int, width: int = 60) -> str:
    start = max(0, at - width // 2)
    return ("..." if start else "") + line[start:start + width] + ("..." if start + width < len(line) else "")


def first_difference(found: str, expected: str) -> str:
    """Where two texts first differ, as 'line N reads ...; the rows give ...'."""
    a, b = found.split("\n"), expected.split("\n")
    for i, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            at = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            return f"line {i} reads {_excerpt(x, at)!r}; the rows give {_excerpt(y, at)!r}"
    return f"it has {len(a)} lines; the rows give {len(b)}"


def check_renderings(results: Path, grid: Grid, t: tables.RenderedTable, checks: Checks) -> list[dict]:
    """One check per rendering of `t`; returns [{format, path, status}] for the report."""
    out = []
    tables_dir = Layout(results, grid.experiment).tables_dir
    for suffix, expected in tables.renderings(t, grid.settings.rounding).items():
        path = tables_dir / f"{t.spec.id}{suffix}"
        name = f"rendering{suffix}"
        if not path.is_file():
            checks.skip(name, f"{path} does not exist: that rendering was not checked; {FIX}")
        else:
            try:
                found = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                found = None
                checks.add(name, MISMATCH, f"{path} is not UTF-8 text (byte {e.start}): it was damaged; {FIX}")
            if found is not None:
                checks.ok_if(name, found == expected, f"{path} equals the table re-rendered from the rows",
                             f"{path} differs from the table re-rendered from the rows: "
                             f"{first_difference(found, expected)}; the file was edited or is stale; {FIX}")
        out.append({"format": suffix.lstrip("."), "path": str(path), "status": checks.items[-1]["status"]})
    return out
