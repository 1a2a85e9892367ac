"""Audit one table cell: where a rendered number comes from, and whether it reproduces.

    diffsmooth audit --configfile config/fast.yaml table4 2 0.30          # row number, radius column
    diffsmooth audit table4 "DiffSmooth (Gaussian) | 0.25 | 0.25" ACR     # row label, ACR column
    diffsmooth audit table1 5 0.20 --verify 3                             # envelope: audits the winning cell
    diffsmooth audit <cell id> --verify 3 --images 3,17                   # a cell directly (also --cell-id)

One module per job: `value` (table position -> the value `tables.compute_table` gives, explained),
`renderings` (every rendered file of the table against a re-rendering from the rows), `cell` (the cell's
provenance), `checkpoints` and `dvc` (are these the recorded weights), `verify` (re-certification),
`text` (terminal output), `checks` (the verdicts). Any mismatch makes the exit code 1; every skipped
check is reported with its reason.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..grid import Grid
from ..tables import RowCache
from .cell import audit_cell
from .checks import SCHEMA, SCHEMA_VERSION, AuditError, Checks, validate_report
from .dvc import dvc_record
from .indices import compact_indices
from .renderings import check_renderings
from .text import format_text
from .value import _norm_label, _resolve_row, appearances, audit_value
from .verify import choose_images


def build_report(config: dict, grid: Grid, results="results", table=None, row=None, column=None, cell=None,
                 verify: int = 0, images=None, threads=None) -> dict:
    results = Path(results)
    checks = Checks()
    cache = RowCache(results, grid.experiment)  # one read of each rows file, shared with the renderer
    if verify < 0:
        raise AuditError(f"--verify must be >= 0, got {verify}")
    if cell is None and table is not None and "/" in str(table) and row is None and column is None:
        cell, table = table, None  # `diffsmooth audit <cell id>`
    report = {"schema_version": SCHEMA_VERSION, "experiment": grid.experiment, "target": None, "value": None,
              "renderings": [], "cell_audit": None, "checks": checks.items, "ok": True}
    if cell is not None:
        target_cell = grid.cell_by_id(cell)
        report["target"] = {"table": None, "row": None, "row_label": None, "column": None, "cell_id": cell,
                            "appears_in": appearances(results, grid, cell)}
    else:
        if table is None or row is None or column is None:
            raise AuditError("name a table cell as `TABLE ROW COLUMN` (e.g. `table4 2 0.30` or `table4 2 ACR`), "
                             "or a cell with `--cell-id <id>` (ids: `diffsmooth cells --configfile ...`)")
        report["target"], report["value"], target_cell, rendered = audit_value(results, grid, table, row, column, checks, cache)
        report["renderings"] = check_renderings(results, grid, rendered, checks)
    if target_cell is not None:
        report["cell_audit"] = audit_cell(config, grid, results, target_cell, checks, verify=verify,
                                          images=images, threads=threads, cache=cache)
    report["ok"] = checks.ok
    return report


def print_audit(config: dict, grid: Grid, results="results", table=None, row=None, column=None, cell=None,
                verify: int = 0, images=None, threads=None, as_json: bool = False) -> int:
    """`diffsmooth audit`: print the audit (text or JSON); 0 when everything matches, 1 otherwise."""
    report = build_report(config, grid, results=results, table=table, row=row, column=column, cell=cell,
                          verify=verify or 0, images=images, threads=threads)
    if as_json:
        validate_report(report)
        text = json.dumps(report, indent=2, ensure_ascii=False)
    else:
        text = format_text(report)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `diffsmooth audit ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if report["ok"] else 1


__all__ = ["SCHEMA", "AuditError", "print_audit", "build_report", "validate_report", "format_text", "compact_indices",
           "choose_images", "dvc_record", "_norm_label", "_resolve_row"]
