"""CERTIFY's statistics against independent computations (statsmodels, closed forms, simulation)."""
import math

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from diffsmooth import statistics as st


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
@pytest.mark.parametrize("n", [1, 10, 100, 1000, 10_000, 100_000])
def test_bound_matches_statsmodels_two_sided_at_2alpha(n, alpha):
    for n_a in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
        expected = proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]
        expected = 0.0 if n_a == 0 else expected
        assert st.lower_confidence_bound(n_a, n, alpha) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_all_samples_agree_gives_alpha_to_the_one_over_n():
    for n in (100, 1000, 10_000, 100_000):
        assert st.lower_confidence_bound(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-12)


def test_smallest_non_abstaining_count_at_10000():
    # reference-spec: 5,156 of 10,000 (and 50,490 of 100,000) at alpha = 0.001
    assert st.lower_confidence_bound(5155, 10_000, 0.001) < 0.5 <= st.lower_confidence_bound(5156, 10_000, 0.001)
    assert st.lower_confidence_bound(50_489, 100_000, 0.001) < 0.5 <= st.lower_confidence_bound(50_490, 100_000, 0.001)
    assert st.decide(3, 5155, 10_000, 0.001, 0.5)[0] == st.ABSTAIN
    assert st.decide(3, 5156, 10_000, 0.001, 0.5)[0] == 3


@pytest.mark.parametrize("n, ratio", [(100, 1.5005), (500, 2.2052), (1000, 2.4633), (10_000, 3.1986), (100_000, 3.8115)])
def test_largest_radius_per_n(n, ratio):
    assert st.max_radius(n, 0.001, 1.0) == pytest.approx(ratio, abs=5e-5)
    predict, radius, _ = st.decide(7, n, n, 0.001, 0.25)
    assert predict == 7 and radius == pytest.approx(0.25 * ratio, abs=2e-5)


def test_radius_is_sigma_times_inverse_normal_cdf():
    predict, radius, p = st.decide(2, 900, 1000, 0.001, 0.5)
    assert predict == 2 and radius == pytest.approx(0.5 * norm.ppf(p), rel=1e-12)


def test_zero_count_bound_is_zero_and_abstains():
    assert st.lower_confidence_bound(0, 100, 0.001) == 0.0
    assert st.decide(1, 0, 100, 0.001, 0.25) == (st.ABSTAIN, 0.0, 0.0)


def test_exactly_one_half_is_not_abstained():
    # abstain iff pA_lower < 0.5 (strict): pA_lower == 0.5 certifies radius 0
    predict, radius, _ = st.decide(4, 1, 1, 0.5, 1.0)  # Beta.ppf(0.5; 1, 1) = 0.5
    assert predict == 4 and radius == 0.0


@pytest.mark.parametrize("bad", [dict(n_a=-1, n=10), dict(n_a=11, n=10), dict(n_a=0, n=0)])
def test_bound_rejects_impossible_counts(bad):
    with pytest.raises(ValueError):
        st.lower_confidence_bound(bad["n_a"], bad["n"], 0.001)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_bound_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha"):
        st.lower_confidence_bound(5, 10, alpha)


def test_bound_covers_true_p_with_probability_at_least_one_minus_alpha():
    """Synthetic base classifier with known p: pA_lower > p happens in at most ~alpha of trials."""
    rng = np.random.default_rng(0)
    alpha, n, trials = 0.05, 200, 4000
    for p in (0.55, 0.8, 0.97):
        n_a = rng.binomial(n, p, size=trials)
        failures = sum(st.lower_confidence_bound(int(k), n, alpha) > p for k in n_a)
        # Clopper-Pearson is conservative: failure rate <= alpha, up to 3 binomial standard errors
        assert failures / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_predict_uses_two_sided_binomial_test():
    assert st.predict_decision([0, 60, 40], alpha=0.001) == st.ABSTAIN  # p ~ 0.057
    assert st.predict_decision([0, 90, 10], alpha=0.001) == 1
    assert st.predict_decision([5, 5, 0], alpha=0.001) == st.ABSTAIN


def test_round_sig_matches_python_format():
    for x in (0.4996, 0.0125, 1.2345, 0.0, 2.0, 0.37849):
        assert st.round_sig(x) == float(f"{x:.3}")
