"""The results layout: the one place that knows where every product of the pipeline lives.

    results/<experiment>/cells/<cell id>/rows.tsv, meta.json          a cell's merged rows and provenance
    results/<experiment>/cells/<cell id>/shards/NNNN.{tsv,json}        one shard's rows (and .tsv.partial while running)
    results/<experiment>/groups/<group>/shards/NNNN-<key>.json         a fused job's summary (Snakemake's output)
    results/<experiment>/groups/<group>/merged-<key>.json              a merged sigma group's summary
    results/<experiment>/checkpoints/<name>.pt, <name>.report.json     models the pipeline trains
    results/<experiment>/logs/<rule>/...                               job logs
    results/<experiment>/throughput.json                               measured samples/s
    results/<experiment>/config.yaml                                   the merged config of a run with overrides
    results/tables/<experiment>/<table>.{md,tex,html,cells.csv,...}     rendered tables
    results/<experiment>/metrics.json, plots/<table>.csv              the tables' numbers for DVC

Every method takes real values or Snakemake wildcard placeholders (the strings "{cell}", "{shard}", ...), so
the workflow's patterns and the library's paths come from the same code. `contained` is the guard every
writer uses: nothing derived from a config name may land outside the results tree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


ROWS, META = "rows.tsv", "meta.json"  # a cell's files, in its directory (or an import's --out directory)


class OutsideResultsError(ValueError):
    """A path built from config names resolves outside the results tree."""


def _shard(shard) -> str:
    return shard if isinstance(shard, str) else f"{int(shard):04d}"


def _id(cell_or_id) -> str:
    if isinstance(cell_or_id, str):
        return cell_or_id
    from .cell import cell_id

    return cell_id(cell_or_id)


@dataclass(frozen=True)
class Layout:
    root: Path
    experiment: str

    def __init__(self, root, experiment: str):
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "experiment", str(experiment))

    @property
    def experiment_dir(self) -> Path:
        return self.root / self.experiment

    # the folders DVC tracks as outs (dvc.yaml): cells, sigma groups, trained checkpoints
    @property
    def cells_dir(self) -> Path:
        return self.experiment_dir / "cells"

    @property
    def groups_dir(self) -> Path:
        return self.experiment_dir / "groups"

    @property
    def checkpoints_dir(self) -> Path:
        return self.experiment_dir / "checkpoints"

    # cells
    def cell_dir(self, cell) -> Path:
        return self.cells_dir / _id(cell)

    def rows(self, cell) -> Path:
        return self.cell_dir(cell) / ROWS

    def meta(self, cell) -> Path:
        return self.cell_dir(cell) / META

    def shard_rows(self, cell, shard) -> Path:
        return self.cell_dir(cell) / "shards" / f"{_shard(shard)}.tsv"

    def shard_meta(self, cell, shard) -> Path:
        return self.cell_dir(cell) / "shards" / f"{_shard(shard)}.json"

    # sigma groups (fused mode)
    def group_dir(self, group: str) -> Path:
        return self.groups_dir / group

    def group_shard_summary(self, group: str, shard, key: str) -> Path:
        return self.group_dir(group) / "shards" / f"{_shard(shard)}-{key}.json"

    def group_merged_summary(self, group: str, key: str) -> Path:
        return self.group_dir(group) / f"merged-{key}.json"

    # models, logs, measurements, tables
    def checkpoint(self, name: str) -> Path:
        return self.checkpoints_dir / f"{name}.pt"

    def training_report(self, name: str) -> Path:
        return self.checkpoints_dir / f"{name}.report.json"

    def log(self, rule: str, name: str) -> Path:
        return self.experiment_dir / "logs" / rule / f"{name}.log"

    @property
    def effective_config(self) -> Path:
        """The merged config of a run with overrides (what its jobs read)."""
        return self.experiment_dir / "config.yaml"

    @property
    def throughput(self) -> Path:
        return self.experiment_dir / "throughput.json"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables" / self.experiment

    # DVC's metrics and plot data: outside tables_dir, which is an out of the tables stage on its own
    @property
    def metrics(self) -> Path:
        return self.experiment_dir / "metrics.json"

    @property
    def plots_dir(self) -> Path:
        return self.experiment_dir / "plots"


def locate(path) -> dict | None:
    """What a results file is, read back from its path: {"kind": "rows" | "shard_rows" | "partial_rows",
    "cell": cell id, "shard": int or None}, or None for a path outside the cells layout."""
    parts = Path(path).parts
    if "cells" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("cells")
    name = parts[-1]
    if name == ROWS:
        return {"kind": "rows", "cell": "/".join(parts[at + 1:-1]), "shard": None}
    stem = name.split(".")[0]
    if len(parts) >= 2 and parts[-2] == "shards" and stem.isdigit():
        kind = "partial_rows" if name.endswith(".tsv.partial") else "shard_rows" if name.endswith(".tsv") else None
        return {"kind": kind, "cell": "/".join(parts[at + 1:-2]), "shard": int(stem)} if kind else None
    return None


def contained(path, root) -> Path:
    """`path` itself, after checking that it resolves inside `root` (symlinks and `..` followed)."""
    path, root = Path(path), Path(root)
    resolved, top = path.resolve(), root.resolve()
    if resolved != top and top not in resolved.parents:
        raise OutsideResultsError(f"refusing to write {path}: it resolves to {resolved}, outside {root}/; "
                                  "a name in the config (experiment, classifier, model or table id) must not "
                                  "contain '/' or '..'")
    return path
