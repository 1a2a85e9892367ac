"""The experiment grid: from a validated config to certification cells, sigma groups, shards and tables.

One source of truth for Snakemake (which jobs exist), the CLI (what a job computes), the planner and
the table renderer (which cells make up which table row).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .cell import Cell, cell_id, group_id, sigma_str  # noqa: F401  (re-exported)
from .config import REPO_ROOT, ConfigError, Settings, load_config, sigma_key, validate_config  # noqa: F401
from .layouts import (LAYOUTS, PAPER_DATASET_NAMES, Cells, TableRow, TableSpec,  # noqa: F401  (re-exported)
                      radius_list)


@dataclass
class Grid:
    config: dict
    cells: list
    tables: list
    # cell id -> importing.ImportEntry: cells whose rows come from a user's log (`imports:`), never certified
    imported: dict = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.config["experiment"]

    @cached_property
    def settings(self) -> Settings:
        return Settings.of(self.config)

    def groups(self) -> dict:
        """sigma-group id ('dataset/sigmaX') -> cells sharing noisy samples."""
        out: dict = {}
        for c in self.cells:
            if cell_id(c) not in self.imported:  # imported cells are inputs: no certification job
                out.setdefault(group_id(c), []).append(c)
        return out

    def images(self) -> list:
        sel = self.config["dataset"]["images"]
        return list(range(sel["start"], sel["stop"], sel["skip"]))

    def shards(self) -> list:
        size = self.settings.shard_size
        imgs = self.images()
        return [imgs[k:k + size] for k in range(0, len(imgs), size)]

    def cell_by_id(self, cid: str) -> Cell:
        for c in self.cells:
            if cell_id(c) == cid:
                return c
        raise ConfigError(f"no cell {cid!r} in experiment {self.experiment!r}: "
                          "list them with `diffsmooth cells --configfile ...`")


def group_summary_path(grid: "Grid", group: str, shard: int | None = None, results="results") -> str:
    """The fused jobs' output files. Their names carry a digest of the group's cell ids, images and the
    certification code's version, so a changed grid or a deliberate version bump is a new file that
    Snakemake must make, even when its metadata (params) was lost."""
    import hashlib
    import json

    from .cell import CERTIFY_VERSION
    from .paths import Layout

    cells = sorted(cell_id(c) for c in grid.groups()[group])
    images = grid.shards()[shard] if shard is not None else grid.shards()
    key = hashlib.sha256(json.dumps([cells, images, CERTIFY_VERSION]).encode()).hexdigest()[:10]
    layout = Layout(results, grid.experiment)
    path = layout.group_merged_summary(group, key) if shard is None else layout.group_shard_summary(group, shard, key)
    return str(path)


def build_grid(config: dict) -> Grid:
    """Expand the config into cells (deduplicated, deterministic order) and table specs, one layout per kind."""
    from .importing import imported_cells

    cells = Cells(config)
    tables = []
    for tid, spec in config["tables"].items():
        if spec["kind"] not in LAYOUTS:
            raise ConfigError(f"tables/{tid}: unknown kind {spec['kind']!r}")
        tables.append(LAYOUTS[spec["kind"]](cells, tid, spec))
    return Grid(config, list(cells.cells), tables, imported_cells(config, list(cells.cells)))


def max_certifiable_radius(cell: Cell) -> float:
    from .statistics import max_radius

    return max_radius(cell.N, cell.alpha, cell.sigma)
