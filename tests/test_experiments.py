"""config/experiments.yaml and `diffsmooth run-experiment`, the command of dvc.yaml's experiment@<name> stages:
names and paths are checked before anything runs, and Snakemake is started without a shell."""
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from diffsmooth.cli import main
from diffsmooth.config import ConfigError
from diffsmooth.experiments import (
    EXPERIMENTS_FILE,
    experiment_config,
    read_experiments,
    snakemake_command,
    stage_experiment,
)


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working directory with the fast config and an experiments file naming it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "config" / "fast.yaml", _write(tmp_path / "config" / "fast.yaml", ""))
    _write(tmp_path / EXPERIMENTS_FILE, {"experiments": {"digits-fast": "config/fast.yaml"}})
    return tmp_path


def test_the_committed_file_lists_no_experiment_and_parses():
    # the paper's grids need user-supplied data: a fresh clone's `dvc repro` must not start them
    assert read_experiments(REPO / EXPERIMENTS_FILE) == {}
    text = (REPO / EXPERIMENTS_FILE).read_text()
    assert "cifar10: config/cifar10.yaml" in text and "imagenet: config/imagenet.yaml" in text


def test_an_entry_resolves_to_its_checked_config(repo):
    assert read_experiments() == {"digits-fast": Path("config/fast.yaml")}
    assert experiment_config("digits-fast") == Path("config/fast.yaml")


@pytest.mark.parametrize("stage, name", [("experiment@cifar10", "cifar10"),
                                         ("dvc.yaml:experiment@digits-fast", "digits-fast")])
def test_stage_address_names_the_experiment(stage, name):
    assert stage_experiment(stage) == name


@pytest.mark.parametrize("stage", [None, "", "tables", "train@x"])
def test_no_experiment_stage_is_refused(stage):
    with pytest.raises(ConfigError, match="experiment@<name>"):
        stage_experiment(stage)


@pytest.mark.parametrize("name", ["x; rm -rf ~", "../up", "a/b", "$(id)", "", "name with space"])
def test_hostile_names_are_refused(repo, name):
    _write(repo / EXPERIMENTS_FILE, {"experiments": {name: "config/fast.yaml"}})
    with pytest.raises(ConfigError, match="must match"):
        read_experiments()


@pytest.mark.parametrize("config", ["/etc/passwd", "../outside.yaml", "config/../../x.yaml", 7, None])
def test_configs_outside_the_repository_are_refused(repo, config):
    _write(repo / EXPERIMENTS_FILE, {"experiments": {"digits-fast": config}})
    with pytest.raises(ConfigError, match="inside the repository"):
        read_experiments()


@pytest.mark.parametrize("text", ["experiments: [config/fast.yaml]\n", "experiment: {a: b}\n",
                                  "experiments: {}\nextra: 1\n", "- a\n", "", "experiments: 3\n"])
def test_a_malformed_file_is_refused_with_its_shape(repo, text):
    _write(repo / EXPERIMENTS_FILE, text)
    with pytest.raises(ConfigError, match="expected one key"):
        read_experiments()


def test_an_empty_mapping_is_no_experiment(repo):
    _write(repo / EXPERIMENTS_FILE, "experiments:\n")
    assert read_experiments() == {}


def test_unlisted_missing_and_misnamed_entries_name_the_fix(repo):
    with pytest.raises(ConfigError, match="not in config/experiments.yaml .listed: digits-fast."):
        experiment_config("cifar10")
    _write(repo / EXPERIMENTS_FILE, {"experiments": {"cifar10": "config/cifar10.yaml"}})
    with pytest.raises(ConfigError, match="does not exist"):
        experiment_config("cifar10")
    # the config would write results/digits-fast/, where the stage experiment@fast does not look
    _write(repo / EXPERIMENTS_FILE, {"experiments": {"fast": "config/fast.yaml"}})
    with pytest.raises(ConfigError, match="rename the entry to digits-fast"):
        experiment_config("fast")


def test_snakemake_runs_beside_this_interpreter_without_a_shell():
    cmd = snakemake_command(Path("config/x y.yaml"), 3, ["--dry-run"])
    assert cmd[:3] == [sys.executable, "-m", "snakemake"]
    assert cmd[3:] == ["all_tables", "-c3", "--rerun-incomplete", "--configfile", "config/x y.yaml", "--dry-run"]


def test_cli_refuses_before_running_anything(repo, capsys, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "experiment@fast")
    _write(repo / EXPERIMENTS_FILE, {"experiments": {"fast": "config/fast.yaml"}})
    assert main(["run-experiment"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffsmooth run-experiment: error:") and "rename the entry" in err
    assert "Traceback" not in err and not (repo / "results").exists()


def test_cli_dry_run_through_snakemake(repo, capsys, monkeypatch):
    """The stage's command end to end as far as a dry run: the entry checked, Snakemake started on its config
    with the arguments after `--`."""
    for f in ("Snakefile", "workflow", "diffsmooth"):
        (repo / f).symlink_to(REPO / f)
    monkeypatch.setenv("DVC_STAGE", "experiment@digits-fast")
    assert main(["run-experiment", "--", "--dry-run", "--quiet"]) == 0
    assert "--configfile config/fast.yaml --dry-run --quiet" in capsys.readouterr().out
