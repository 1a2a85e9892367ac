"""Shared fixtures. Pipeline tests run in a copy of the repository (never in the working tree), with
PYTHONPATH pointing at the copy so its `diffsmooth` package and configs are the ones exercised."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One torch thread per process: two OpenMP threads collapse 20-35x on a shared 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def small_cifar10_config(experiment: str, stop: int, tables, **changes) -> dict:
    """config/cifar10.yaml cut to sigma = 0.25 (sigma' 0.12 and 0.25), images 0, 20, ... < stop, these tables."""
    import yaml

    from diffsmooth.grid import validate_config

    cfg = yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())
    cfg["experiment"] = experiment
    cfg["dataset"]["images"] = {"start": 0, "stop": stop, "skip": 20}
    cfg["sigmas"] = [0.25]
    for mod in cfg["models"]:
        mod["grid"] = {"0.25": [0.12, 0.25]}
    cfg["tables"] = {k: v for k, v in cfg["tables"].items() if k in tables}
    cfg.update(changes)
    validate_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def repo_root():
    return REPO


def copy_repo(dest: Path) -> Path:
    """Copy tracked and untracked-but-not-ignored files (what a clone plus local edits would hold)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f, follow_symlinks=False)  # config/config.yaml stays a link to params.yaml
    return dest


def pipeline_env(root: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(root)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd, root: Path, timeout=900, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=pipeline_env(root), capture_output=True, text=True,
                          timeout=timeout, shell=isinstance(cmd, str), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory) -> Path:
    """The fast experiment run end to end once per session: data -> training -> certification -> tables."""
    root = copy_repo(tmp_path_factory.mktemp("fast") / "repo")
    run(["snakemake", "-c2", "all_tables", "--configfile", "config/fast.yaml"], root)
    return root


def write_synthetic_rows(results, grid, outcome) -> None:
    """rows.tsv of every cell of `grid` under `results`, from outcome(i, j) -> (correct, radius) for image i of
    cell j: deterministic rows for table tests, at the paths the library's layout gives."""
    from diffsmooth.paths import Layout
    from diffsmooth.rows import HEADER, format_row

    for j, cell in enumerate(grid.cells):
        lines = [HEADER]
        for i, idx in enumerate(grid.images()):
            correct, radius = outcome(i, j)
            lines.append(format_row(idx, 1, 1 if correct else -1, radius, correct, 0.01, 9 if correct else 0,
                                    cell.N, 0.9 if correct else 0.0))
        path = Layout(results, grid.experiment).rows(cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
