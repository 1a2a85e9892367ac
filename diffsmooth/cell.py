"""A cell: one certified configuration of the paper's tables (method, classifier, sigma, sigma', shift, m,
N, n0, alpha, seed, local-noise mode), and its identity.

Plain data with no torch import, so the workflow can build the whole grid of cells without loading torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# The certification code's version, part of every stored cell identity. Bump it on purpose when a change
# alters any certification result (rows): finished rows of the old version are then refused, never
# reused, and the workflow submits the jobs again. Edits that change no result (a comment, a refactor)
# keep it, so they submit no job; tests/test_golden_rows.py holds golden rows that fail when results
# change while this number does not.
CERTIFY_VERSION = 1
METHODS = ("rs", "dds", "diffsmooth", "local")
LOCAL_NOISE_MODES = ("fixed", "fresh")


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


def sigma_str(sigma: float) -> str:
    return f"{sigma:.2f}"


def cell_id(cell: Cell) -> str:
    """The cell's identity: a path that includes every parameter that changes its rows."""
    return (f"{cell.dataset}/sigma{sigma_str(cell.sigma)}/{cell.method}/{cell.classifier}/"
            f"sl{cell.sigma_local:g}_shift{cell.shift:g}_m{cell.m}_N{cell.N}_n0{cell.n0}_"
            f"alpha{cell.alpha:g}_seed{cell.seed}_{cell.local_noise}")


def group_id(cell: Cell) -> str:
    return f"{cell.dataset}/sigma{sigma_str(cell.sigma)}"
