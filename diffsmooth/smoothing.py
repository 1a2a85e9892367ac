"""Randomized-smoothing CERTIFY (Cohen et al., Alg. 4-5) over the base classifiers the paper compares.

A *cell* is one certified configuration (method, classifier, sigma, sigma', shift, m, N, n0, alpha, seed).
Cells that share (dataset, sigma, seed) see the same keyed noisy samples, so `Certifier` evaluates all
of them together: one purifier pass per noisy sample, one classifier pass per (head, local draw), where a
head is (input source, classifier, effective sigma', local-noise mode) and smaller m and N are prefixes.

Methods (base classifier f applied to a noisy sample x_rs = x + sigma * z):
  rs          F(x_rs)                                            Gaussian / SmoothAdv randomized smoothing
  dds         F(purify(x_rs))                                    DDS(Standard) / DDS(Smoothed)
  diffsmooth  argmax mean_i softmax F(purify(x_rs) + sigma'_eff eta_i)   DiffSmooth, i = 1..m
  local       argmax mean_i softmax F(x_rs + sigma'_eff eta_i)           local smoothing without diffusion
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import statistics
from .cell import LOCAL_NOISE_MODES, METHODS, Cell  # noqa: F401  (re-exported: the cell is part of this API)
from .noise import NoiseStream, fixed_local_noise


# Default classifier batch = FOLD_FACTOR x the purifier batch (Certifier(classifier_batch_size=...)
# overrides it): 21 draws of a 1000-sample batch in 3 forwards of 7,000 samples; on CIFAR-10 a
# ResNet-110 forward of 7,000 32x32 images holds ~1 GiB of fp32 activations per layer.
FOLD_FACTOR = 8


class NonFiniteOutputError(RuntimeError):
    """A model produced NaN/Inf: such an output must never be counted as a vote."""


@dataclass
class CellResult:
    predict: int
    radius: float
    n_a: int
    n: int
    p_a_lower: float
    counts0: list = field(default_factory=list)


@dataclass
class _Head:
    source: str
    classifier: str
    sigma_eff: float
    local_noise: str
    ms: set  # prefixes of the local-draw ladder that some cell reads (0 = no local smoothing)


class Certifier:
    """Certifies one image for every cell of one (dataset, sigma, seed) group."""

    def __init__(self, cells, classifiers: dict[str, nn.Module], purifier: nn.Module | None,
                 num_classes: int, image_shape: tuple[int, ...], batch_size: int = 1000, device="cpu",
                 classifier_batch_size: int | None = None):
        cells = list(dict.fromkeys(cells))
        if not cells:
            raise ValueError("no cells to certify")
        groups = {c.group for c in cells}
        if len(groups) != 1:
            raise ValueError(f"cells of one Certifier must share (dataset, sigma, seed); got {sorted(groups)}")
        missing = sorted({c.classifier for c in cells} - set(classifiers))
        if missing:
            raise ValueError(f"no classifier loaded for {missing}")
        if any(c.uses_diffusion for c in cells) and purifier is None:
            raise ValueError("cells of method dds/diffsmooth need a purifier (diffusion model)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if classifier_batch_size is not None and classifier_batch_size < 1:
            raise ValueError(f"classifier_batch_size must be >= 1, got {classifier_batch_size}")
        self.cells = cells
        self.dataset, self.sigma, self.seed = cells[0].group
        self.classifiers = classifiers
        self.purifier = purifier
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.batch_size = batch_size
        # Local draws are folded into classifier forwards of up to this many samples (whole draws of a
        # batch at a time, at least one draw): memory stays bounded, kernels get large batches.
        self.classifier_batch_size = classifier_batch_size or FOLD_FACTOR * batch_size
        self.device = torch.device(device)
        self.heads: dict[tuple, _Head] = {}
        for c in cells:
            h = self.heads.setdefault(c.head, _Head(*c.head, ms=set()))
            h.ms.add(c.m)
        self.max_m = max(c.m for c in cells)
        self.fixed_local = (fixed_local_noise(self.seed, self.dataset, self.max_m, self.image_shape, self.device)
                            if any(h.local_noise == "fixed" for h in self.heads.values()) else None)
        self.needs_fresh = any(h.local_noise == "fresh" for h in self.heads.values())
        # noisy samples one image costs (selection + estimation); `on_batch(samples)` is told of each batch
        self.samples_per_image = max(c.n0 for c in cells) + max(c.N for c in cells)
        self.on_batch = None

    @torch.inference_mode()
    def certify(self, x: torch.Tensor, index: int) -> dict[Cell, CellResult]:
        """CERTIFY for every cell: n0 selection samples, then fresh estimation samples, Clopper-Pearson bound."""
        x = x.to(self.device)
        counts0 = self._counts(x, index, "selection", {c: c.n0 for c in self.cells})
        sel = torch.stack([counts0[c] for c in self.cells])
        c_a = sel.argmax(dim=1)  # ties -> lowest class, as numpy's argmax in the reference
        counts = self._counts(x, index, "estimation", {c: c.N for c in self.cells})
        est = torch.stack([counts[c] for c in self.cells])
        n_a = est.gather(1, c_a[:, None])[:, 0]
        # one device-to-host copy per image for all cells
        c_a, n_a, sel = c_a.tolist(), n_a.tolist(), sel.tolist()
        results = {}
        for j, c in enumerate(self.cells):
            predict, radius, p_lower = statistics.decide(c_a[j], n_a[j], c.N, c.alpha, c.sigma)
            results[c] = CellResult(predict, radius, n_a[j], c.N, p_lower, sel[j])
        return results

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, index: int, n: int, alpha: float) -> dict[Cell, int]:
        """PREDICT (Cohen et al.): n samples of their own stream; the top class, or ABSTAIN when the two-sided
        binomial test of top-1 against top-2 has p-value > alpha (scipy's binomtest)."""
        counts = self._counts(x.to(self.device), index, "prediction", {c: n for c in self.cells})
        return {c: statistics.predict_decision(counts[c].tolist(), alpha) for c in self.cells}

    def _counts(self, x, index: int, stream: str, limits: dict[Cell, int]) -> dict[Cell, torch.Tensor]:
        """Class histograms of the base classifiers over the first limits[cell] samples of `stream`.

        The per-batch loop makes no host synchronisation (no bincount, .item() or bool() on a device
        tensor): votes go into one preallocated [cells, classes] tensor by scatter_add_, and NaN/Inf
        is checked once per phase."""
        noise = NoiseStream(self.seed, self.dataset, self.sigma, index, stream, self.image_shape, self.device)
        fresh = ([NoiseStream(self.seed, self.dataset, self.sigma, index, f"{stream}/local{i}",
                              self.image_shape, self.device) for i in range(self.max_m)]
                 if self.needs_fresh else None)
        cells = list(limits)
        counts = torch.zeros((len(cells), self.num_classes), dtype=torch.long, device=self.device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        total = max(limits.values())
        ones = torch.ones(min(self.batch_size, total), dtype=torch.long, device=self.device)
        for start in range(0, total, self.batch_size):
            b = min(self.batch_size, total - start)
            active = [(j, c) for j, c in enumerate(cells) if limits[c] > start]
            wanted: dict[tuple, set] = {}
            for _, c in active:
                wanted.setdefault(c.head, set()).add(c.m)
            x_rs = x.unsqueeze(0) + self.sigma * noise.take(start, b)
            local = (torch.stack([s.take(start, b) for s in fresh], dim=1) if fresh else None)
            labels, bad = self._labels(x_rs, wanted, local)
            nonfinite |= bad
            for j, c in active:
                k = min(b, limits[c] - start)
                counts[j].scatter_add_(0, labels[(c.head, c.m)][:k], ones[:k])
            if self.on_batch is not None:  # progress: a host-side counter, no device sync
                self.on_batch(b)
        if bool(nonfinite):  # one host sync per phase, not per batch
            raise NonFiniteOutputError(
                f"a model returned NaN/Inf for image {index} (sigma={self.sigma}, {stream} phase): "
                "check the checkpoint and the precision setting (`certify.precision`); no vote was counted")
        return dict(zip(cells, counts))

    def _labels(self, x_rs, wanted: dict[tuple, set], local):
        """Base-classifier labels of every wanted (head, m) for one batch of noisy samples.

        Local smoothing: the draws eta_1..eta_M of a batch are folded into large classifier forwards over
        (inputs[None] + sigma'_eff eta[:, None]).flatten(0, 1), whole draws per forward, and the softmax
        probabilities are summed over draws in draw order, the running sum read at every m of the ladder
        (argmax of the mean = argmax of the sum): the same additions, in the same order, as one forward
        per draw."""
        bad = torch.zeros((), dtype=torch.bool, device=x_rs.device)
        purified = None
        if any(head[0] == "purified" for head in wanted):
            purified = self.purifier(x_rs)
            bad |= ~torch.isfinite(purified).all()
        out = {}
        b = x_rs.shape[0]
        for key, ms in wanted.items():
            head = self.heads[key]
            inputs = purified if head.source == "purified" else x_rs
            model = self.classifiers[head.classifier]
            if ms == {0}:
                logits = model(inputs)
                bad |= ~torch.isfinite(logits).all()
                out[(key, 0)] = logits.argmax(dim=1)
                continue
            top = max(ms)
            draws = max(1, self.classifier_batch_size // b)
            prob_sum = None
            for d0 in range(0, top, draws):
                d1 = min(top, d0 + draws)
                if head.local_noise == "fixed":
                    eta = self.fixed_local[d0:d1, None]  # [d, 1, *shape], shared by the batch
                else:
                    eta = local[:, d0:d1].transpose(0, 1)  # [d, B, *shape]
                noisy = (inputs[None] + head.sigma_eff * eta).flatten(0, 1)
                # torch.softmax, not a hand-written one: 44.6 us vs 51.6 us at 1100x10, 910 us both at
                # 23100x10 (CPU, 1 thread, torch 2.14.1, 2026-12-01); the 5x gap once noted (issue #18) is gone.
                probs = torch.softmax(model(noisy).float(), dim=1).view(d1 - d0, b, -1)
                for i in range(d0, d1):
                    prob_sum = probs[0].clone() if prob_sum is None else prob_sum.add_(probs[i - d0])
                    if i + 1 in ms:
                        out[(key, i + 1)] = prob_sum.argmax(dim=1)
            bad |= ~torch.isfinite(prob_sum).all()  # NaN/Inf in any draw propagates into the sum
        return out, bad
