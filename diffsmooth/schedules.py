"""Diffusion noise schedules and the smoothing-sigma -> timestep rule (t*).

Matches improved/guided-diffusion: float64 betas, 0-based alphas_cumprod, and
t* = first index whose sqrt((1 - abar) / abar) >= 2 sigma (the factor 2 maps [0,1] pixels to [-1,1]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Betas exactly as `get_named_beta_schedule` computes them (float64)."""
    if name == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), 0.999)
                 for i in range(num_timesteps)]
        return np.array(betas, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {name!r}: use 'linear' or 'cosine'")


@dataclass(frozen=True)
class Schedule:
    """A diffusion model's schedule, plus how the model expects its time input."""

    name: str
    num_timesteps: int
    rescale_timesteps: bool = False

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - beta_schedule(self.name, self.num_timesteps))

    def t_star(self, sigma: float) -> int:
        """First 0-based index t with sqrt((1 - abar_t) / abar_t) >= 2 sigma."""
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        abar = self.alphas_cumprod
        ratio = np.sqrt(1.0 - abar) / np.sqrt(abar)
        hits = np.nonzero(ratio >= 2 * sigma)[0]
        if len(hits) == 0:
            raise ValueError(f"sigma={sigma} exceeds the largest noise level of the "
                             f"{self.name}-{self.num_timesteps} schedule ({ratio[-1] / 2:.3f})")
        return int(hits[0])

    def sqrt_alpha_bar(self, t: int) -> float:
        return float(np.sqrt(self.alphas_cumprod[t]))

    def model_time(self, t: int) -> float:
        """What the network receives: t*1000/T for rescaled checkpoints, the integer t otherwise."""
        return t * 1000.0 / self.num_timesteps if self.rescale_timesteps else float(t)


def schedule_from_flags(flags: dict) -> Schedule:
    """The schedule of a diffusion checkpoint from its reference flags; `rescale_timesteps` must be
    explicit because its default differs between improved-diffusion (True) and guided-diffusion (False)."""
    missing = [k for k in ("noise_schedule", "diffusion_steps", "rescale_timesteps") if k not in flags]
    if missing:
        raise ValueError(f"diffusion flags lack {missing}: set them explicitly in the config "
                         "(improved-diffusion CIFAR-10: cosine, 4000, true; guided-diffusion 256: linear, 1000, false)")
    return Schedule(flags["noise_schedule"], int(flags["diffusion_steps"]), bool(flags["rescale_timesteps"]))
