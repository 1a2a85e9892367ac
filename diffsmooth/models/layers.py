"""Input normalisation layers that live *inside* a classifier, so noise and radii stay in [0,1] pixel space.

Means and stds are non-persistent buffers: they move with `.to(device)` but add no state_dict keys,
exactly like the reference NormalizeLayer whose tensors were plain attributes.
"""
from __future__ import annotations

import torch
from torch import nn

NORMALIZATIONS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "vit": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),  # DiffSmooth's BEiT: 2x - 1
    "digits": ([0.3050], [0.3819]),  # mean/std of sklearn digits pixels / 16
}


class NormalizeLayer(nn.Module):
    """(x - mean) / std per channel."""

    def __init__(self, means, sds):
        super().__init__()
        self.register_buffer("means", torch.tensor(means).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("sds", torch.tensor(sds).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.means) / self.sds


class InputCenterLayer(nn.Module):
    """x - mean, no division (SmoothAdv's layer for imagenet/ and most cifar10/ models)."""

    def __init__(self, means):
        super().__init__()
        self.register_buffer("means", torch.tensor(means).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.means


def normalization_layer(kind: str, dataset_stats: str) -> nn.Module:
    """kind: 'normalize' or 'input_center'; dataset_stats: a key of NORMALIZATIONS."""
    if dataset_stats not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation statistics {dataset_stats!r}: use one of {sorted(NORMALIZATIONS)}")
    means, sds = NORMALIZATIONS[dataset_stats]
    if kind == "normalize":
        return NormalizeLayer(means, sds)
    if kind == "input_center":
        return InputCenterLayer(means)
    raise ValueError(f"unknown normalisation layer {kind!r}: use 'normalize' or 'input_center'")
