"""The statistics of randomized smoothing (Cohen et al. 2019): bound, abstain rule, radius, PREDICT test."""
from __future__ import annotations

import math

from scipy.stats import beta, binomtest, norm

ABSTAIN = -1


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p_A: Beta.ppf(alpha; nA, n - nA + 1), 0 when nA = 0."""
    if not 0 <= n_a <= n or n < 1:
        raise ValueError(f"need 0 <= nA <= n and n >= 1, got nA={n_a}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_a == 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(pA_lower); only meaningful when the prediction is not abstained (pA_lower >= 0.5)."""
    return float(sigma * norm.ppf(p_a_lower))


def decide(c_a: int, n_a: int, n: int, alpha: float, sigma: float) -> tuple[int, float, float]:
    """CERTIFY's final step: (prediction or ABSTAIN, radius, pA_lower). Abstain iff pA_lower < 0.5 (strict)."""
    p_lower = lower_confidence_bound(n_a, n, alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0, p_lower
    return c_a, certified_radius(p_lower, sigma), p_lower


def max_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest radius n samples can certify (every sample votes for cA): sigma * Phi^-1(alpha^(1/n))."""
    return certified_radius(alpha ** (1.0 / n), sigma)


def predict_decision(counts, alpha: float) -> int:
    """PREDICT: top class unless the two-sided binomial test of top-1 vs top-2 has p-value > alpha."""
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    c1, c2 = order[0], order[1]
    n1, n2 = int(counts[c1]), int(counts[c2])
    if n1 + n2 == 0 or binomtest(n1, n1 + n2, 0.5).pvalue > alpha:
        return ABSTAIN
    return c1


def round_sig(x: float, digits: int = 3) -> float:
    """Python's '{:.3}' formatting, as the reference certify.py writes radii (3 significant digits)."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}}")
