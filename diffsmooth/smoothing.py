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

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import statistics
from .noise import NoiseStream, fixed_local_noise

METHODS = ("rs", "dds", "diffsmooth", "local")
LOCAL_NOISE_MODES = ("fixed", "fresh")


class NonFiniteOutputError(RuntimeError):
    """A model produced NaN/Inf: such an output must never be counted as a vote."""


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    classifier: str
    sigma: float
    sigma_local: float = 0.0
    shift: float = 0.0
    m: int = 0
    N: int = 100_000
    n0: int = 100
    alpha: float = 0.001
    seed: int = 0
    local_noise: str = "fixed"

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("invalid cell: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with this cell, each with the fix (config keys in parentheses)."""
        p = []
        if self.method not in METHODS:
            p.append(f"unknown method {self.method!r} (use one of {', '.join(METHODS)})")
        if not self.sigma > 0:
            p.append(f"sigma must be > 0, got {self.sigma}: use a positive noise level (`sigmas`)")
        if not 0 < self.alpha < 1:
            p.append(f"alpha must lie in (0, 1), got {self.alpha}: use e.g. 0.001 (`certify.alpha`)")
        if self.N < 1 or self.n0 < 1:
            p.append(f"N and n0 must be >= 1, got N={self.N}, n0={self.n0}: use positive sample counts "
                     "(`certify.N`, `certify.n0`)")
        if self.local_noise not in LOCAL_NOISE_MODES:
            p.append(f"local_noise must be one of {LOCAL_NOISE_MODES}, got {self.local_noise!r}: "
                     "set `certify.local_noise` to one of them")
        if self.method in ("rs", "dds"):
            if self.m != 0 or self.sigma_local != 0 or self.shift != 0:
                p.append(f"method {self.method} takes no local smoothing: set m=0, sigma_local=0, shift=0")
        elif self.method in ("diffsmooth", "local"):
            if self.m < 1:
                p.append(f"method {self.method} needs m >= 1 local noise draws, got m={self.m}: set m >= 1 (`m`)")
            if not 0 < self.sigma_local <= self.sigma:
                p.append(f"method {self.method} needs 0 < sigma' <= sigma, got sigma'={self.sigma_local} "
                         f"with sigma={self.sigma}: lower sigma' or raise sigma")
            if self.shift < 0:
                p.append(f"shift must be >= 0, got {self.shift}: use a non-negative shift (`models: shift`)")
        return p

    @property
    def uses_diffusion(self) -> bool:
        return self.method in ("dds", "diffsmooth")

    @property
    def sigma_local_effective(self) -> float:
        return round(self.sigma_local + self.shift, 10) if self.m else 0.0

    @property
    def head(self) -> tuple:
        source = "purified" if self.uses_diffusion else "noisy"
        return (source, self.classifier, self.sigma_local_effective, self.local_noise if self.m else "none")

    @property
    def group(self) -> tuple:
        """Cells with the same group share their noisy samples."""
        return (self.dataset, self.sigma, self.seed)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CellResult:
    predict: int
    radius: float
    n_a: int
    n: int
    p_a_lower: float
    counts0: list = field(default_factory=list)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, written out: torch.softmax over a short last dimension is ~5x slower on CPU."""
    e = (logits - logits.amax(dim=1, keepdim=True)).exp_()
    return e.div_(e.sum(dim=1, keepdim=True))


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
                 num_classes: int, image_shape: tuple[int, ...], batch_size: int = 1000, device="cpu"):
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
        self.cells = cells
        self.dataset, self.sigma, self.seed = cells[0].group
        self.classifiers = classifiers
        self.purifier = purifier
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.heads: dict[tuple, _Head] = {}
        for c in cells:
            h = self.heads.setdefault(c.head, _Head(*c.head, ms=set()))
            h.ms.add(c.m)
        self.max_m = max(c.m for c in cells)
        self.fixed_local = (fixed_local_noise(self.seed, self.dataset, self.max_m, self.image_shape, self.device)
                            if any(h.local_noise == "fixed" for h in self.heads.values()) else None)
        self.needs_fresh = any(h.local_noise == "fresh" for h in self.heads.values())

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
        """Class histograms of the base classifiers over the first limits[cell] samples of `stream`."""
        noise = NoiseStream(self.seed, self.dataset, self.sigma, index, stream, self.image_shape, self.device)
        fresh = ([NoiseStream(self.seed, self.dataset, self.sigma, index, f"{stream}/local{i}",
                              self.image_shape, self.device) for i in range(self.max_m)]
                 if self.needs_fresh else None)
        counts = {c: torch.zeros(self.num_classes, dtype=torch.long, device=self.device) for c in limits}
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        total = max(limits.values())
        for start in range(0, total, self.batch_size):
            b = min(self.batch_size, total - start)
            active = [c for c in limits if limits[c] > start]
            wanted: dict[tuple, set] = {}
            for c in active:
                wanted.setdefault(c.head, set()).add(c.m)
            x_rs = x.unsqueeze(0) + self.sigma * noise.take(start, b)
            local = (torch.stack([s.take(start, b) for s in fresh], dim=1) if fresh else None)
            labels, bad = self._labels(x_rs, wanted, local)
            nonfinite |= bad
            for c in active:
                k = min(b, limits[c] - start)
                counts[c] += torch.bincount(labels[(c.head, c.m)][:k], minlength=self.num_classes)
        if bool(nonfinite):  # one host sync per phase, not per batch
            raise NonFiniteOutputError(
                f"a model returned NaN/Inf for image {index} (sigma={self.sigma}, {stream} phase): "
                "check the checkpoint and the autocast setting; no vote was counted")
        return counts

    def _labels(self, x_rs, wanted: dict[tuple, set], local):
        """Base-classifier labels of every wanted (head, m) for one batch of noisy samples."""
        bad = torch.zeros((), dtype=torch.bool, device=x_rs.device)
        purified = None
        if any(head[0] == "purified" for head in wanted):
            purified = self.purifier(x_rs)
            bad |= ~torch.isfinite(purified).all()
        out = {}
        for key, ms in wanted.items():
            head = self.heads[key]
            inputs = purified if head.source == "purified" else x_rs
            model = self.classifiers[head.classifier]
            if ms == {0}:
                logits = model(inputs)
                bad |= ~torch.isfinite(logits).all()
                out[(key, 0)] = logits.argmax(dim=1)
                continue
            prob_sum = None
            for i in range(1, max(ms) + 1):
                eta = self.fixed_local[i - 1] if head.local_noise == "fixed" else local[:, i - 1]
                probs = _softmax(model(inputs + head.sigma_eff * eta).float())
                prob_sum = probs if prob_sum is None else prob_sum.add_(probs)
                if i in ms:
                    out[(key, i)] = prob_sum.argmax(dim=1)  # argmax of the mean = argmax of the sum
            bad |= ~torch.isfinite(prob_sum).all()  # NaN/Inf in any draw propagates into the sum
        return out, bad
