"""Do a cell's rows agree with each other, with what N and alpha can certify, and with CERTIFY's last step?"""
from __future__ import annotations

from .. import statistics, tables
from ..cell import Cell


def statistics_problems(rows, cell: Cell) -> list[dict]:
    """Rows whose values contradict each other or CERTIFY's last step; columns a log lacks (nA, n,
    pA_lower of Cohen's format) are not re-derived."""
    limit = tables.radius_limit(cell)
    bad = []
    for r in rows.itertuples(index=False):
        problems = []
        if int(r.correct) != int(r.predict == r.label):
            problems.append(f"correct = {r.correct} with predict = {r.predict}, label = {r.label}")
        if r.predict == statistics.ABSTAIN and r.radius != 0:
            problems.append(f"radius = {r.radius!r} for an abstention (predict = -1)")
        if r.radius > limit:
            problems.append(f"radius = {r.radius!r} > {limit:.6g}, more than N = {cell.N} samples can certify "
                            f"at alpha = {cell.alpha:g}, sigma = {cell.sigma:g}")
        present = lambda x: x is not None and x == x  # noqa: E731  (None or NaN: the log lacks the column)
        if present(r.n) and present(r.nA):
            if r.n != cell.N:
                problems.append(f"n = {r.n}, the cell's N = {cell.N}")
            try:
                p = statistics.lower_confidence_bound(int(r.nA), int(r.n), cell.alpha)
            except ValueError as e:
                bad.append({"idx": int(r.idx), "problems": problems + [str(e)]})
                continue
            if present(r.pA_lower) and p != r.pA_lower:
                problems.append(f"pA_lower = {r.pA_lower!r}, nA = {r.nA} of n = {r.n} gives {p!r}")
            abstain = p < 0.5
            radius = 0.0 if abstain else statistics.certified_radius(p, cell.sigma)
            if radius != r.radius:
                problems.append(f"radius = {r.radius!r}, nA = {r.nA} gives {radius!r}")
            if abstain != (r.predict == statistics.ABSTAIN):
                problems.append(f"predict = {r.predict} but pA_lower {'<' if abstain else '>='} 0.5")
        if problems:
            bad.append({"idx": int(r.idx), "problems": problems})
    return bad
