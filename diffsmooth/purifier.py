"""One-shot diffusion purification (DiffSmooth Alg. 2, DDS): x_rs -> x_hat in [0,1].

x_t = sqrt(abar_t*) (2 x_rs - 1)   (scaled, no extra noise: x_rs already carries sigma-noise)
x_hat0 = clamp((x_t - sqrt(1 - abar) eps) / sqrt(abar), -1, 1), eps = the first C output channels.
"""
from __future__ import annotations

import torch
from torch import nn

from .schedules import Schedule


class OneShotPurifier(nn.Module):
    def __init__(self, eps_model: nn.Module, schedule: Schedule, sigma: float):
        super().__init__()
        self.eps_model = eps_model
        self.sigma = float(sigma)
        self.t_star = schedule.t_star(sigma)
        abar = float(schedule.alphas_cumprod[self.t_star])
        # float64 constants as the reference computes them, applied in the model's float32
        self.sqrt_abar = abar ** 0.5
        self.sqrt_recip_abar = (1.0 / abar) ** 0.5
        self.sqrt_recipm1_abar = (1.0 / abar - 1.0) ** 0.5
        self.model_time = schedule.model_time(self.t_star)

    @torch.no_grad()
    def forward(self, x_rs: torch.Tensor) -> torch.Tensor:
        x_t = self.sqrt_abar * (2.0 * x_rs - 1.0)
        t = torch.full((x_rs.shape[0],), self.model_time, device=x_rs.device, dtype=torch.float32)
        out = self.eps_model(x_t, t)
        eps = out[:, : x_rs.shape[1]].float()
        x0 = (self.sqrt_recip_abar * x_t - self.sqrt_recipm1_abar * eps).clamp(-1.0, 1.0)
        return (x0 + 1.0) / 2.0
