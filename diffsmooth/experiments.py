"""The experiments DVC runs besides the embedded default: `config/experiments.yaml`, one `experiment@<name>`
stage of dvc.yaml each (docs/dvc.md).

The file maps each experiment name to its config, `{experiments: {cifar10: config/cifar10.yaml}}`. DVC
interpolates the names into the stages' outs, never into their command: the stage runs `diffsmooth
run-experiment`, which reads its name from `$DVC_STAGE`, checks it here and starts Snakemake without a shell.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .config import ConfigError, load_config, read_yaml, schema
from .paths import Layout

EXPERIMENTS_FILE = Path("config/experiments.yaml")
STAGE = "experiment"


def read_experiments(path=EXPERIMENTS_FILE) -> dict[str, Path]:
    """{name: config path} of the experiments file, every name and path checked."""
    data = read_yaml(path)
    entries = data.get("experiments") if isinstance(data, dict) else None
    if not isinstance(data, dict) or set(data) != {"experiments"} or not isinstance(entries, (dict, type(None))):
        raise ConfigError(f"{path}: expected one key, `experiments:`, mapping each experiment name to its config "
                          f"file, e.g. `experiments: {{cifar10: config/cifar10.yaml}}` (or `{{}}` for none)")
    pattern = schema()["properties"]["experiment"]["pattern"]  # the name of results/<experiment>/
    out = {}
    for name, config in (entries or {}).items():
        if not isinstance(name, str) or not re.match(pattern, name):
            raise ConfigError(f"{path}: experiment name {name!r} must match {pattern} (it names "
                              "results/<name>/ and the DVC stage): rename it")
        config_path = Path(str(config)) if isinstance(config, str) else None
        if config_path is None or config_path.is_absolute() or ".." in config_path.parts:
            raise ConfigError(f"{path}: experiments.{name} must be a config file inside the repository, as a "
                              f"relative path such as config/{name}.yaml (got {config!r})")
        out[name] = config_path
    return out


def stage_experiment(stage: str | None) -> str:
    """The experiment name of a DVC stage address: `experiment@cifar10` (or `dvc.yaml:experiment@cifar10`)."""
    address = (stage or "").rsplit(":", 1)[-1]
    prefix = f"{STAGE}@"
    if not address.startswith(prefix):
        raise ConfigError(f"no experiment named: DVC_STAGE is {stage!r}, not {prefix}<name>. Pass the name "
                          "(`diffsmooth run-experiment cifar10`) or run the stage through DVC "
                          "(`dvc repro experiment@cifar10`)")
    return address[len(prefix):]


def experiment_config(name: str, path=EXPERIMENTS_FILE) -> Path:
    """The checked config of experiment `name`: listed in the file, valid, and naming itself `name`."""
    entries = read_experiments(path)
    if name not in entries:
        listed = ", ".join(entries) or "none"
        raise ConfigError(f"experiment {name!r} is not in {path} (listed: {listed}): add `{name}: "
                          f"config/<file>.yaml` under `experiments:`")
    config_path = entries[name]
    if not config_path.is_file():
        raise ConfigError(f"{path}: experiments.{name} names {config_path}, which does not exist")
    config = load_config(config_path)
    if config["experiment"] != name:
        raise ConfigError(f"{path}: experiments.{name} names {config_path}, whose results go to "
                          f"results/{config['experiment']}/ (its `experiment`), not results/{name}/ where the DVC "
                          f"stage looks for them: rename the entry to {config['experiment']}")
    return config_path


def snakemake_command(config_path: Path, cores: int, extra: list[str]) -> list[str]:
    """The Snakemake run of one experiment (argv, no shell), with the interpreter that runs us."""
    return [sys.executable, "-m", "snakemake", "all_tables", f"-c{cores}", "--rerun-incomplete",
            "--configfile", str(config_path), *extra]


def stage_folders(layout: Layout) -> tuple[Path, ...]:
    """The folders the stage declares as outs that a run may leave unmade: no `groups/` in per_cell mode, no
    `checkpoints/` when every model is user-supplied. Made empty, as DVC needs every out to exist."""
    return layout.cells_dir, layout.groups_dir, layout.checkpoints_dir


def run_experiment(name: str | None, cores: int, extra: list[str], results="results",
                   path=EXPERIMENTS_FILE) -> int:
    name = name or stage_experiment(os.environ.get("DVC_STAGE"))
    cmd = snakemake_command(experiment_config(name, path), cores, extra)
    print("+ " + " ".join(cmd), flush=True)
    returncode = subprocess.run(cmd, check=False).returncode  # its code is the stage's
    if returncode == 0:
        for folder in stage_folders(Layout(results, name)):
            folder.mkdir(parents=True, exist_ok=True)
    return returncode
