"""The certification engine: keyed noise, purifier, fused multi-cell evaluation, determinism."""
import numpy as np
import pytest
import torch
from torch import nn

from diffsmooth import statistics as st
from diffsmooth.models import DigitsEpsMLP, digits_mlp
from diffsmooth.noise import BLOCK, NoiseStream, fixed_local_noise
from diffsmooth.purifier import OneShotPurifier
from diffsmooth.schedules import Schedule
from diffsmooth.smoothing import Cell, Certifier, NonFiniteOutputError

SHAPE = (1, 8, 8)


def _models(seed=0):
    torch.manual_seed(seed)
    clfs = {name: digits_mlp(width=32).eval() for name in ("std", "a", "b")}
    eps = DigitsEpsMLP(width=32, blocks=1).eval()
    return clfs, OneShotPurifier(eps, Schedule("linear", 1000), 0.25)


def _cells(N=300, n0=40):
    base = dict(dataset="digits", sigma=0.25, N=N, n0=n0, alpha=0.001, seed=3)
    return [
        Cell(method="rs", classifier="a", **base),
        Cell(method="dds", classifier="std", **base),
        Cell(method="dds", classifier="b", **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=7, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=3, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=3, **{**base, "N": 120}),
        Cell(method="diffsmooth", classifier="b", sigma_local=0.25, shift=0.0, m=7, **base),
        Cell(method="local", classifier="b", sigma_local=0.25, m=5, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, m=4, local_noise="fresh", **base),
    ]


def _image(i):
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(100 + i))


def _certify(cells, batch_size, images=range(3)):
    clfs, purifier = _models()
    cert = Certifier(cells, clfs, purifier, 10, SHAPE, batch_size=batch_size)
    return {i: cert.certify(_image(i), i) for i in images}


def _as_tuple(r):
    return (r.predict, r.radius, r.n_a, r.n, r.p_a_lower, r.counts0)


def test_noise_stream_is_independent_of_batching():
    s = NoiseStream(1, "digits", 0.25, 7, "estimation", SHAPE)
    whole = s.take(0, 3 * BLOCK + 5)
    pieces = torch.cat([NoiseStream(1, "digits", 0.25, 7, "estimation", SHAPE).take(a, b - a)
                        for a, b in [(0, 1), (1, 300), (300, 301), (301, 3 * BLOCK + 5)]])
    assert torch.equal(whole, pieces)
    other = NoiseStream(1, "digits", 0.25, 8, "estimation", SHAPE).take(0, 10)
    assert not torch.equal(whole[:10], other)
    assert not torch.equal(whole[:10], NoiseStream(1, "digits", 0.25, 7, "selection", SHAPE).take(0, 10))
    assert not torch.equal(whole[:10], NoiseStream(1, "digits", 0.5, 7, "estimation", SHAPE).take(0, 10))


def test_fixed_local_noise_is_nested_in_m():
    assert torch.equal(fixed_local_noise(0, "digits", 21, SHAPE)[:5], fixed_local_noise(0, "digits", 5, SHAPE))


def test_identical_results_for_two_batch_sizes():
    cells = _cells()
    a, b = _certify(cells, 64), _certify(cells, 1000)
    for i in a:
        for c in cells:
            assert _as_tuple(a[i][c]) == _as_tuple(b[i][c]), (i, c)


def test_fused_equals_one_certifier_per_cell():
    """Cells evaluated together (shared noisy samples and purification) give what each gives alone."""
    cells = _cells()
    fused = _certify(cells, 128)
    for c in cells:
        alone = _certify([c], 128)
        for i in alone:
            assert _as_tuple(alone[i][c]) == _as_tuple(fused[i][c]), c


def test_nested_n_reads_a_prefix_of_the_estimation_samples():
    cells = _cells()
    res = _certify(cells, 100, images=[0])[0]
    small = next(c for c in cells if c.N == 120)
    assert res[small].n == 120
    assert res[small].counts0 == res[next(c for c in cells if c.m == 3 and c.N == 300)].counts0


def test_purifier_one_shot_formula():
    class ConstantEps(nn.Module):
        def forward(self, x, t):
            self.t = t
            return torch.full_like(x, 0.3)

    sched = Schedule("linear", 1000)
    eps = ConstantEps()
    p = OneShotPurifier(eps, sched, 0.5)
    x_rs = torch.rand(4, *SHAPE, dtype=torch.float64).float() * 1.4 - 0.2
    out = p(x_rs).double()
    abar = sched.alphas_cumprod[259]
    x_t = np.sqrt(abar) * (2 * x_rs.double().numpy() - 1)
    x0 = np.clip((x_t - np.sqrt(1 - abar) * 0.3) / np.sqrt(abar), -1, 1)
    np.testing.assert_allclose(out.numpy(), (x0 + 1) / 2, atol=1e-6)
    assert p.t_star == 259 and torch.all(eps.t == 259.0)


def test_certificate_statistically_valid_with_known_p():
    """A base classifier with known P(f = 0) = p: pA_lower exceeds p in at most ~alpha of the images."""
    p_true, sigma, N, alpha = 0.8, 0.5, 200, 0.05
    threshold = sigma * float(torch.distributions.Normal(0, 1).icdf(torch.tensor(1 - p_true)))

    class Thresholded(nn.Module):  # class 0 iff the first pixel's noise exceeds the threshold
        def forward(self, x):
            above = (x[:, 0, 0, 0] > threshold).float()
            return torch.stack([above, 1 - above], dim=1) * 10

    cell = Cell(dataset="digits", method="rs", classifier="t", sigma=sigma, N=N, n0=20, alpha=alpha, seed=0)
    cert = Certifier([cell], {"t": Thresholded()}, None, 2, SHAPE, batch_size=N)
    x = torch.zeros(SHAPE)
    trials = 600
    exceed = sum(cert.certify(x, i)[cell].p_a_lower > p_true for i in range(trials))
    assert exceed / trials <= alpha + 3 * (alpha * (1 - alpha) / trials) ** 0.5
    hits = [cert.certify(x, i)[cell].n_a / N for i in range(50)]
    assert abs(np.mean(hits) - p_true) < 0.03  # the keyed noise really is N(0, sigma^2)


def test_nan_output_is_never_counted():
    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 10), float("nan"))

    cell = Cell(dataset="digits", method="rs", classifier="nan", sigma=0.25, N=50, n0=10)
    cert = Certifier([cell], {"nan": NaNModel()}, None, 10, SHAPE, batch_size=50)
    with pytest.raises(NonFiniteOutputError, match="NaN/Inf"):
        cert.certify(torch.zeros(SHAPE), 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="diffsmooth", sigma_local=0.5, m=5), "sigma' <= sigma"),
    (dict(method="diffsmooth", sigma_local=0.12, m=0), "m >= 1"),
    (dict(method="rs", m=3), "no local smoothing"),
    (dict(method="magic"), "unknown method"),
    (dict(method="rs", sigma=0.0), "sigma must be > 0"),
    (dict(method="rs", alpha=1.0), "alpha"),
    (dict(method="rs", N=0), "N and n0"),
    (dict(method="rs", local_noise="sometimes"), "local_noise"),
])
def test_invalid_cells_are_refused(kwargs, message):
    base = dict(dataset="digits", classifier="a", sigma=0.25)
    with pytest.raises(ValueError, match=message):
        Cell(**{**base, **kwargs})


def test_certifier_refuses_mixed_groups_and_missing_models():
    clfs, purifier = _models()
    a = Cell(dataset="digits", method="rs", classifier="a", sigma=0.25)
    b = Cell(dataset="digits", method="rs", classifier="a", sigma=0.5)
    with pytest.raises(ValueError, match="share"):
        Certifier([a, b], clfs, purifier, 10, SHAPE)
    with pytest.raises(ValueError, match="no classifier"):
        Certifier([Cell(dataset="digits", method="rs", classifier="zzz", sigma=0.25)], clfs, purifier, 10, SHAPE)
    with pytest.raises(ValueError, match="purifier"):
        Certifier([Cell(dataset="digits", method="dds", classifier="a", sigma=0.25)], clfs, None, 10, SHAPE)


def test_abstain_rule_applied_per_cell():
    clfs, purifier = _models()
    res = _certify(_cells(), 300, images=[1])[1]
    for c, r in res.items():
        expected = st.decide(r.predict if r.predict >= 0 else 0, r.n_a, c.N, c.alpha, c.sigma)
        if r.predict == st.ABSTAIN:
            assert r.p_a_lower < 0.5 and r.radius == 0.0
        else:
            assert r.radius == expected[1]


def test_predict_abstains_on_a_coin_flip_and_answers_a_sure_class():
    class Coin(nn.Module):  # class 0 or 1 by the sign of the first pixel's noise
        def forward(self, x):
            above = (x[:, 0, 0, 0] > 0.5).float()
            return torch.stack([above, 1 - above, torch.zeros(len(x))], dim=1) * 10

    class Sure(nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 0.0, 1.0]).expand(len(x), 3)

    base = dict(dataset="digits", method="rs", sigma=0.5, N=100, n0=10)
    coin, sure = Cell(classifier="coin", **base), Cell(classifier="sure", **base)
    cert = Certifier([coin, sure], {"coin": Coin(), "sure": Sure()}, None, 3, SHAPE, batch_size=500)
    out = cert.predict(torch.full(SHAPE, 0.5), 0, n=1000, alpha=0.001)
    assert out[coin] == st.ABSTAIN and out[sure] == 2
