"""Small models for the embedded default (sklearn digits, 8x8x1), sized to train in seconds on a CPU.

The classifier follows the reference layout Sequential(NormalizeLayer, net) so its checkpoint has
`1.*` keys and loads through the same path as Cohen et al.'s; the eps-model takes (x_t, t) like a UNet.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import normalization_layer

DIGITS_SHAPE = (1, 8, 8)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cos first (the improved/guided-diffusion convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h, emb):
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class DigitsEpsMLP(nn.Module):
    """eps_theta(x_t, t) for 8x8 images: MLP with residual blocks and a sinusoidal time embedding."""

    def __init__(self, width: int = 256, blocks: int = 2, emb_dim: int = 128, channels: int = 1):
        super().__init__()
        self.emb_dim = emb_dim
        self.shape = (channels, 8, 8)
        d = channels * 64
        self.time_embed = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(_ResidualBlock(width, width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.emb_dim))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).view(x.shape)


def digits_mlp(width: int = 256, num_classes: int = 10, normalization: str = "normalize") -> nn.Module:
    """Classifier: Sequential(NormalizeLayer(digits stats), MLP 64-w-w-10)."""
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, num_classes),
    )
    return nn.Sequential(normalization_layer(normalization, "digits"), net)
