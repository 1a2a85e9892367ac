"""Keyed, batch-independent Gaussian noise.

Every draw comes from a generator seeded by a hash of (seed, dataset, sigma, image index, stream, block).
Samples are generated in fixed blocks of BLOCK, so a cell's noisy samples do not depend on batch size,
shard boundaries or job order, and do not depend on sigma', classifier or m: cells sharing
(dataset, sigma) see the same noisy samples and can share their purification.
"""
from __future__ import annotations

import hashlib

import torch

BLOCK = 256  # samples per keyed block; part of the result's identity, never change it silently


def key_seed(*parts) -> int:
    """A 63-bit seed from the parts' canonical text."""
    text = "|".join(_canonical(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _canonical(part) -> str:
    if isinstance(part, float):
        return f"{part:.6g}"
    return str(part)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class NoiseStream:
    """Standard-normal samples of a given shape for one (seed, dataset, sigma, image, stream).

    `take(start, count)` returns samples start..start+count-1 of the stream, whatever the batching.
    """

    def __init__(self, seed: int, dataset: str, sigma: float, index: int, stream: str,
                 shape: tuple[int, ...], device="cpu", dtype=torch.float32):
        self.key = (seed, dataset, float(sigma), int(index), stream)
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self._cached_block = -1
        self._cached = None

    def _block(self, b: int) -> torch.Tensor:
        if b != self._cached_block:
            gen = _generator(self.device, key_seed(*self.key, b))
            self._cached = torch.randn((BLOCK, *self.shape), generator=gen, device=self.device, dtype=self.dtype)
            self._cached_block = b
        return self._cached

    def take(self, start: int, count: int) -> torch.Tensor:
        pieces = []
        pos = start
        while pos < start + count:
            b, offset = divmod(pos, BLOCK)
            n = min(BLOCK - offset, start + count - pos)
            pieces.append(self._block(b)[offset:offset + n])
            pos += n
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def fixed_local_noise(seed: int, dataset: str, m: int, shape: tuple[int, ...], device="cpu",
                      dtype=torch.float32) -> torch.Tensor:
    """m standard-normal local-noise vectors drawn once and shared by every sample and image.

    Vector i has its own key, so the m = 5 set is the first 5 of the m = 21 set (nested m ladder).
    """
    device = torch.device(device)
    out = [torch.randn(shape, generator=_generator(device, key_seed(seed, dataset, "local-fixed", i)),
                       device=device, dtype=dtype) for i in range(m)]
    return torch.stack(out) if out else torch.empty((0, *shape), device=device, dtype=dtype)
