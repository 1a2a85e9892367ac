"""Noise schedules and t* against the reference values (tests/data/schedules.json, from the reference code)."""
import json
from pathlib import Path

import numpy as np
import pytest

from diffsmooth.schedules import Schedule, beta_schedule, schedule_from_flags

REF = json.loads((Path(__file__).parent / "data" / "schedules.json").read_text())["schedules"]
SCHEDULES = {"cosine_4000": Schedule("cosine", 4000, True), "linear_1000": Schedule("linear", 1000, False)}


@pytest.mark.parametrize("name", SCHEDULES)
def test_betas_and_alphas_cumprod_bitwise(name):
    s = SCHEDULES[name]
    np.testing.assert_array_equal(beta_schedule(s.name, s.num_timesteps), np.array(REF[name]["betas"]))
    np.testing.assert_array_equal(s.alphas_cumprod, np.array(REF[name]["alphas_cumprod"]))


@pytest.mark.parametrize("name, expected", [("cosine_4000", {0.12: 573, 0.25: 1158, 0.5: 1984, 1.0: 2809}),
                                            ("linear_1000", {0.12: 70, 0.25: 145, 0.5: 259, 1.0: 396})])
def test_t_star(name, expected):
    s = SCHEDULES[name]
    ref = REF[name]["t_star"]
    for sigma, t in expected.items():
        assert s.t_star(sigma) == t
        entry = ref[str(sigma)]
        assert entry["t"] == t
        assert s.sqrt_alpha_bar(t) == pytest.approx(entry["sqrt_alphas_cumprod_t"], rel=1e-12)
        assert s.model_time(t) == pytest.approx(entry["unet_timestep_input"])


def test_t_star_is_first_index_not_nearest():
    s = SCHEDULES["linear_1000"]
    abar = s.alphas_cumprod
    ratio = np.sqrt((1 - abar) / abar)
    for sigma in (0.12, 0.25, 0.5, 1.0):
        t = s.t_star(sigma)
        assert ratio[t] >= 2 * sigma > ratio[t - 1]


def test_rescaled_time_input():
    assert SCHEDULES["cosine_4000"].model_time(1158) == 289.5
    assert SCHEDULES["linear_1000"].model_time(145) == 145.0


def test_bad_sigma_and_schedule():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        SCHEDULES["linear_1000"].t_star(0)
    with pytest.raises(ValueError, match="exceeds"):
        SCHEDULES["linear_1000"].t_star(1000.0)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        beta_schedule("sqrt", 10)
    with pytest.raises(ValueError, match="rescale_timesteps"):
        schedule_from_flags({"noise_schedule": "cosine", "diffusion_steps": 4000})
