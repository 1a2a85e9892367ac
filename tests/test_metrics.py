"""Certified accuracy, ACR and radius grids on hand-made rows, including ties at thresholds."""

import pandas as pd
import pytest

from diffsmooth import metrics
from diffsmooth.rows import HEADER, parse_lines

# idx label predict radius correct time nA n pA_lower
ROWS = HEADER + "".join(line + "\n" for line in [
    "0\t1\t1\t0.5\t1\t0.1\t990\t1000\t0.98",        # exactly at r = 0.5
    "1\t2\t2\t0.4996\t1\t0.1\t980\t1000\t0.97",     # rounds to 0.5 (3 significant digits)
    "2\t3\t3\t0.49949\t1\t0.1\t980\t1000\t0.97",    # rounds to 0.499: below 0.5 either way
    "3\t4\t5\t0.9\t0\t0.1\t999\t1000\t0.99",        # wrong prediction: never counts
    "4\t5\t-1\t0.0\t0\t0.1\t400\t1000\t0.36",       # abstained: counts as wrong
    "5\t6\t6\t0.0\t1\t0.1\t530\t1000\t0.5",         # correct with radius 0: counts at r = 0 only
    "6\t7\t7\t0.30000000000000004\t1\t0.1\t900\t1000\t0.8",  # float noise above 0.3
    "7\t8\t8\t0.29999999999999993\t1\t0.1\t900\t1000\t0.8",  # float noise below 0.3 (exact: fails 0.3)
])


@pytest.fixture
def rows():
    parsed, _ = parse_lines("hand-made", ROWS)
    return pd.DataFrame(parsed)


def test_certified_accuracy_reference_rounding(rows):
    assert metrics.certified_count(rows, 0.0) == 6
    assert metrics.certified_count(rows, 0.5) == 2  # 0.5 and 0.4996 -> 0.5
    assert metrics.certified_count(rows, 0.3) == 5  # both float-noise rows round to 0.3
    assert metrics.certified_accuracy(rows, 0.5) == 2 / 8


def test_certified_accuracy_exact(rows):
    assert metrics.certified_count(rows, 0.5, "exact") == 1
    assert metrics.certified_count(rows, 0.3, "exact") == 4
    assert metrics.certified_count(rows, 0.0, "exact") == 6


def test_acr_sums_correct_radii_over_all_rows(rows):
    expected = (0.5 + 0.4996 + 0.49949 + 0.0 + 0.30000000000000004 + 0.29999999999999993) / 8
    assert metrics.acr(rows) == pytest.approx(expected, rel=1e-15)


def test_abstention_rate(rows):
    assert metrics.abstention_rate(rows) == 1 / 8


def test_radius_grid_hits_decimal_ties_exactly():
    grid = metrics.radius_grid(0.0, 1.0, 0.1)
    assert grid[3] == 0.3 and grid[7] == 0.7 and len(grid) == 11
    assert metrics.radius_grid(0.0, 2.25, 0.25)[-1] == 2.25


def test_envelope_is_per_radius_max():
    assert metrics.envelope([[1, 5, 3], [2, 4, 3]]) == [2, 5, 3]
    with pytest.raises(ValueError):
        metrics.envelope([[1, 2], [1]])


def test_envelope_winners_first_on_ties_none_where_no_value():
    """The cell each envelope value comes from (what the tables record and the audit follows)."""
    assert metrics.envelope_winners([[1, 5, 3, None], [2, 4, 3, None], [None, 5, 4, None]]) == [1, 0, 2, None]
    assert metrics.envelope([[None, 1.0], [2.0, None]]) == [2.0, 1.0]
    with pytest.raises(ValueError, match="no curves"):
        metrics.envelope_winners([])


def test_certified_accuracy_curve_matches_pointwise(rows):
    radii = [0.0, 0.3, 0.4996, 0.5, 0.9]
    for rounding in ("reference", "exact"):
        assert metrics.certified_accuracy_curve(rows, radii, rounding) == [
            metrics.certified_accuracy(rows, r, rounding) for r in radii]


def test_clopper_pearson_interval_contains_estimate():
    lo, hi = metrics.clopper_pearson_interval(182, 500)
    assert lo < 182 / 500 < hi and 0.32 < lo and hi < 0.41
    assert metrics.clopper_pearson_interval(0, 10)[0] == 0.0
    assert metrics.clopper_pearson_interval(10, 10)[1] == 1.0


def test_empty_rows_are_an_error():
    empty = pd.DataFrame(columns=["correct", "radius", "predict"])
    with pytest.raises(ValueError, match="empty"):
        metrics.certified_accuracy(empty, 0.0)
    with pytest.raises(ValueError, match="rounding"):
        metrics.certified_count(pd.DataFrame({"correct": [1], "radius": [0.1]}), 0.0, "bankers")
