"""Table metrics from per-image rows: certified accuracy at r, ACR, abstention rate, envelopes.

Rows are the per-image certification rows (pandas DataFrame with `correct`, `radius`, `predict`).
Certified accuracy at r counts rows with correct = 1 and radius >= r (non-strict) over *all* rows, so
abstentions count as wrong. The reference analysis compares radii rounded to 3 significant digits
(what its TSV stored); `rounding="reference"` reproduces that, `rounding="exact"` uses full precision.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy.stats import beta

from .statistics import ABSTAIN, round_sig

ROUNDINGS = ("reference", "exact")


def _radii(rows, rounding: str) -> np.ndarray:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}: use one of {ROUNDINGS}")
    radii = rows["radius"].to_numpy(dtype=float)
    if rounding == "reference":
        radii = np.array([round_sig(r) for r in radii])
    return radii


def certified_count(rows, r: float, rounding: str = "reference") -> int:
    """Number of rows with correct = 1 and radius >= r."""
    correct = rows["correct"].to_numpy(dtype=int) == 1
    return int(np.sum(correct & (_radii(rows, rounding) >= r)))


def certified_accuracy(rows, r: float, rounding: str = "reference") -> float:
    if len(rows) == 0:
        raise ValueError("no rows: certified accuracy of an empty cell is undefined")
    return certified_count(rows, r, rounding) / len(rows)


def certified_accuracy_curve(rows, radii: Sequence[float], rounding: str = "reference") -> list[float]:
    """Certified accuracy at each radius (one rounding pass for the whole curve, for plots)."""
    if len(rows) == 0:
        raise ValueError("no rows: certified accuracy of an empty cell is undefined")
    correct = rows["correct"].to_numpy(dtype=int) == 1
    got = _radii(rows, rounding)[correct]
    return [float(np.sum(got >= r)) / len(rows) for r in radii]


def acr(rows, rounding: str = "exact") -> float:
    """MACER's average certified radius: sum of radii of correct rows / number of rows."""
    if len(rows) == 0:
        raise ValueError("no rows: ACR of an empty cell is undefined")
    correct = rows["correct"].to_numpy(dtype=int) == 1
    return float(np.sum(_radii(rows, rounding)[correct]) / len(rows))


def abstention_rate(rows) -> float:
    return float(np.mean(rows["predict"].to_numpy(dtype=int) == ABSTAIN))


def radius_grid(start: float, stop: float, step: float) -> list[float]:
    """Radii start, start+step, ..., stop computed as k*step and rounded, so 0.1-steps hit their ties exactly."""
    count = int(round((stop - start) / step)) + 1
    return [round(start + k * step, 10) for k in range(count)]


def envelope_winners(curves: Iterable[Sequence[float | None]]) -> list[int | None]:
    """Per radius, the index of the curve with the largest value: the first one on ties (so the choice is
    deterministic, in the order given), None where no curve has a value (None = radius not certifiable)."""
    curves = [list(c) for c in curves]
    if not curves:
        raise ValueError("envelope of no curves")
    width = {len(c) for c in curves}
    if len(width) != 1:
        raise ValueError(f"curves of different lengths {sorted(width)}")
    winners = []
    for col in zip(*curves):
        best = None
        for i, x in enumerate(col):
            if x is not None and (best is None or x > col[best]):
                best = i
        winners.append(best)
    return winners


def envelope(curves: Iterable[Sequence[float | None]]) -> list[float | None]:
    """Per-radius maximum over several certified-accuracy curves (the paper's Tables 1 and 2)."""
    curves = [list(c) for c in curves]
    return [None if w is None else curves[w][j] for j, w in enumerate(envelope_winners(curves))]


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact binomial interval for k successes in n trials."""
    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi
