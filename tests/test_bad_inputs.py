"""Every bad input fails fast, with a message naming the problem (and where) and the fix, and writes nothing.

The CLI is exercised in-process (`diffsmooth.cli.main`, run from a copy of the fast experiment's tree, so no
torch import per case), a few commands as real processes, and Snakemake's config validation once. Each case
snapshots the results/ and data/ trees (every file and folder with its size and mtime) before and after:
nothing may be created, changed or removed, not even a temporary file (a folder's mtime would change).

About the wrong normalisation layer (case 5): the reference layers keep their means/stds out of the
state_dict, so a checkpoint of the pipeline's (or Cohen et al.'s) format says nothing about its normalisation
and `normalization: input_center` on a `normalize`-trained digits checkpoint is *not* detectable. What the
loader does detect are checkpoints that store the layer's buffers (`0.means` + `0.sds`: a NormalizeLayer;
`0.means` alone: an InputCenterLayer); those are the cases tested here.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from diffsmooth.cli import main
from diffsmooth.grid import ConfigError, build_grid, cell_id, load_config
from diffsmooth.models import DigitsEpsMLP
from diffsmooth.smoothing import Cell, Certifier, NonFiniteOutputError

from conftest import run

pytestmark = pytest.mark.slow

GROUP = "digits/sigma0.25"
CKPT = Path("results/digits-fast/checkpoints")


@pytest.fixture(scope="module")
def tree(fast_run, tmp_path_factory) -> Path:
    """A private copy of the finished fast experiment (other test files share fast_run itself)."""
    root = tmp_path_factory.mktemp("bad_inputs") / "repo"
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns(".snakemake", "__pycache__"))
    return root


@pytest.fixture(scope="module")
def base_config(tree) -> dict:
    return yaml.safe_load((tree / "config" / "fast.yaml").read_text())


# --------------------------------------------------------------------------------------------------
# helpers

def snapshot(root: Path, dirs=("results", "data")) -> dict:
    """path -> (size, mtime_ns) of every file and folder under `dirs` of `root` (absent dirs: one entry)."""
    out = {}
    for d in dirs:
        base = Path(root) / d
        if not base.exists():
            out[str(base)] = "absent"
            continue
        for p in [base, *base.rglob("*")]:
            st = p.lstat()
            out[str(p)] = (p.is_dir(), st.st_size if not p.is_dir() else None, st.st_mtime_ns)
    return out


def assert_unchanged(before: dict, after: dict) -> None:
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (new or gone or changed), f"written: new {new[:5]}, removed {gone[:5]}, changed {changed[:5]}"


@pytest.fixture
def cli(tree, monkeypatch, capsys):
    """Run `diffsmooth ARGV` in the copy; assert it fails and writes nothing under results/, data/ and `watch`."""
    monkeypatch.chdir(tree)

    def call(*argv, watch=()):
        before = snapshot(tree, ("results", "data", *map(str, watch)))
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            rc = e.code
        err = capsys.readouterr().err
        assert rc not in (0, None), f"diffsmooth {' '.join(map(str, argv))} succeeded:\n{err}"
        assert "Traceback" not in err, err
        assert_unchanged(before, snapshot(tree, ("results", "data", *map(str, watch))))
        return err

    return call


@pytest.fixture
def config_file(base_config, tmp_path):
    """Write a modified copy of config/fast.yaml as a new file (outside the tree) and return its path."""

    def write(mutate=None, name="bad.yaml") -> Path:
        config = copy.deepcopy(base_config)
        if mutate:
            mutate(config)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


def set_in(*keys, value):
    def mutate(config):
        node = config
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return mutate


def certify(cfg, *extra):
    return ("certify", "--configfile", cfg, "--group", GROUP, "--shard", "0", "--no-progress", *extra)


def expect(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in message:\n{message}"


def classifier_checkpoint(tree) -> dict:
    return torch.load(tree / CKPT / "gaussian_0.25.pt", weights_only=True)


def point_classifier_at(path, **spec):
    def mutate(config):
        config["classifiers"]["gaussian_0.25"].update(checkpoint=str(path), **spec)
    return mutate


# --------------------------------------------------------------------------------------------------
# 1-2: data

def test_missing_dataset_directory(cli, config_file):
    err = cli(*certify(config_file(set_in("dataset", "root", value="data/nowhere"))))
    expect(err, "dataset directory data/nowhere", "does not exist", "prepare_data", "correct dataset.root")


def test_missing_dataset_file(cli, config_file, tree, tmp_path):
    root = tmp_path / "digits-without-test"
    root.mkdir()
    shutil.copy2(tree / "data" / "digits" / "train.npz", root / "train.npz")
    err = cli(*certify(config_file(set_in("dataset", "root", value=str(root)))), watch=[root])
    expect(err, f"{root / 'test.npz'} missing", "diffsmooth prepare-data --configfile")


# --------------------------------------------------------------------------------------------------
# 3-6: checkpoints

@pytest.mark.parametrize("which", ["classifier", "diffusion"])
def test_missing_checkpoint(cli, config_file, tmp_path, which):
    absent = tmp_path / "absent.pt"
    mutate = (point_classifier_at(absent) if which == "classifier"
              else set_in("diffusion", "checkpoint", value=str(absent)))
    err = cli(*certify(config_file(mutate)))
    expect(err, f"checkpoint {absent}", "does not exist", "snakemake -c2 all_tables")
    expect(err, "classifier 'gaussian_0.25'" if which == "classifier" else "diffusion model")


def test_config_arch_of_another_dataset(cli, config_file):
    """Refused from the config alone, before any checkpoint is read (even for finished cells)."""
    err = cli(*certify(config_file(set_in("classifiers", "gaussian_0.25", "arch", value="cifar_resnet20"))))
    expect(err, "classifiers/gaussian_0.25", "'cifar_resnet20' is for dataset(s) ['cifar10'], not 'digits'",
           "set `arch:`")


@pytest.mark.parametrize("content, problem", [
    ("eps_model", "does not match digits_mlp"),  # the state_dict of another network
    ("stored_arch", "stores arch='cifar_resnet20' but arch='digits_mlp' was requested"),
])
def test_checkpoint_of_another_architecture(cli, config_file, tree, tmp_path, content, problem):
    path = tmp_path / "other.pt"
    if content == "eps_model":
        torch.save({"arch": "digits_mlp", "state_dict": DigitsEpsMLP(width=32, blocks=1).state_dict()}, path)
    else:
        torch.save({**classifier_checkpoint(tree), "arch": "cifar_resnet20"}, path)
    fresh = tmp_path / "results-fresh"  # no finished rows: the job gets as far as loading the models
    err = cli(*certify(config_file(point_classifier_at(path)), "--results", fresh), watch=[fresh])
    expect(err, "classifier 'gaussian_0.25'", str(path), problem, "Fix: set `arch:`/`normalization:`")


@pytest.mark.parametrize("stored, configured, problem, fix", [
    ({"0.means": [0.3050], "0.sds": [0.3819]}, "input_center",
     "stores 0.means and 0.sds (a NormalizeLayer", "normalization='normalize'"),
    ({"0.means": [0.3050]}, "normalize",
     "stores 0.means without 0.sds (an InputCenterLayer", "normalization='input_center'"),
])
def test_checkpoint_with_other_normalisation_layer(cli, config_file, tree, tmp_path, stored, configured, problem, fix):
    ckpt = classifier_checkpoint(tree)
    ckpt["state_dict"].update({k: torch.tensor(v) for k, v in stored.items()})
    path = tmp_path / "normalised.pt"
    torch.save(ckpt, path)
    fresh = tmp_path / "results-fresh"
    err = cli(*certify(config_file(point_classifier_at(path, normalization=configured)), "--results", fresh),
              watch=[fresh])
    expect(err, "classifier 'gaussian_0.25'", "wrong normalisation layer", problem, fix, "`normalization:`")


def test_checkpoint_hash_differs_from_config(cli, config_file):
    err = cli(*certify(config_file(set_in("classifiers", "gaussian_0.25", "sha256", value="0" * 64))))
    expect(err, "gaussian_0.25.pt", "has sha256", "the config records 0000000000000000",
           "restore it", "update `sha256:`")


def test_finished_cell_refuses_a_changed_checkpoint(cli, config_file, tree, tmp_path):
    """The same finished shard, rerun after one byte of its classifier checkpoint changed: refused, rows kept."""
    data = bytearray((tree / CKPT / "gaussian_0.25.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "gaussian_0.25.pt"
    changed.write_bytes(bytes(data))
    err = cli(*certify(config_file(point_classifier_at(changed))))
    expect(err, "already holds finished rows computed with other settings", "classifier_sha256: stored",
           "refusing to overwrite", "Move or delete that file", "restore it")


def test_nan_weights_stop_before_any_vote(cli, config_file, tree, tmp_path):
    ckpt = classifier_checkpoint(tree)
    ckpt["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    path = tmp_path / "nan.pt"
    torch.save(ckpt, path)
    fresh = tmp_path / "results-fresh"
    err = cli(*certify(config_file(point_classifier_at(path)), "--results", fresh), watch=[fresh])
    expect(err, str(path), "classifier 'gaussian_0.25'", "NaN/Inf values", "1.1.weight", "nothing was certified",
           "retrain")


def test_nan_output_at_run_time_is_not_a_vote():
    """A model that turns NaN on some inputs only (finite weights): CERTIFY stops, no count is returned."""

    class SometimesNaN(nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = 1.0
            logits[-1, 0] = float("nan")
            return logits

    cell = Cell(dataset="digits", method="rs", classifier="c", sigma=0.25, N=40, n0=8)
    certifier = Certifier([cell], {"c": SometimesNaN()}, None, 10, (1, 8, 8), batch_size=16)
    with pytest.raises(NonFiniteOutputError, match="no vote was counted"):
        certifier.certify(torch.zeros(1, 8, 8), 0)


# --------------------------------------------------------------------------------------------------
# 7-11, 16-17: the config (JSON schema + cross-key checks), through the CLI and load_config

CONFIG_CASES = {
    "sigma_zero": (set_in("sigmas", value=[0]), ["sigmas/0", "use a value > 0"]),
    "sigma_negative": (set_in("sigmas", value=[-0.25]), ["sigmas/0", "use a value > 0"]),
    "sigma_local_above_sigma": (
        lambda c: (c["models"][0]["classifiers"].update({"0.5": "gaussian_0.25"}),
                   c["models"][0]["grid"].update({"0.25": [0.12, 0.5]})),
        ["models/gaussian/grid/0.25", "sigma'=0.5 > sigma=0.25", "lower sigma'"]),
    "alpha_one": (set_in("certify", "alpha", value=1.0), ["certify/alpha", "use a value < 1"]),
    "alpha_zero": (set_in("certify", "alpha", value=0.0), ["certify/alpha", "use a value > 0"]),
    "N_zero": (set_in("certify", "N", value=0), ["certify/N", "use a value >= 1"]),
    "n0_zero": (set_in("certify", "n0", value=0), ["certify/n0", "use a value >= 1"]),
    "no_image_selected": (set_in("dataset", "images", "start", value=40), ["dataset/images: start=40 >= stop=40",
                                                                           "set stop above start"]),
    "unknown_dataset": (set_in("dataset", "name", value="mnist"), ["dataset/name", "'mnist' is not one of",
                                                                   "use one of the values listed"]),
    "unknown_classifier": (lambda c: c["models"][0]["classifiers"].update({"0.25": "nope"}),
                           ["models/gaussian/classifiers/0.25", "unknown classifier 'nope'",
                            "define it under `classifiers:`"]),
    "unknown_method": (set_in("tables", "table1", "kind", value="bogus"),  # methods come from table kinds
                       ["tables/table1/kind", "'bogus' is not one of", "use one of the values listed"]),
    "unknown_key": (set_in("certfy", value={"N": 10}), ["<top>", "('certfy' was unexpected)", "remove or rename it",
                                                        "certify"]),
    "unknown_nested_key": (set_in("certify", "NN", value=10), ["certify", "('NN' was unexpected)",
                                                               "remove or rename it", "n0, N, alpha"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_value(cli, config_file, case):
    mutate, parts = CONFIG_CASES[case]
    path = config_file(mutate)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expect(str(info.value), str(path), *parts)
    err = cli(*certify(path))
    expect(err, "diffsmooth certify: error:", str(path), *parts)


def test_malformed_yaml(cli, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("experiment: digits-fast\ndataset: {name: digits, root: data/digits\nseed: 0\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)
    err = cli(*certify(path))
    expect(err, f"{path} is not valid YAML", "line ", "Fix the syntax")


@pytest.mark.parametrize("kwargs, parts", [
    (dict(sigma=0.0), ["sigma must be > 0", "use a positive noise level"]),
    (dict(method="diffsmooth", sigma_local=0.5, m=5), ["sigma'=0.5 with sigma=0.25", "lower sigma' or raise sigma"]),
    (dict(alpha=1.5), ["alpha must lie in (0, 1)", "certify.alpha"]),
    (dict(N=0, n0=0), ["N and n0 must be >= 1", "certify.N"]),
    (dict(method="magic"), ["unknown method 'magic'", "use one of rs, dds, diffsmooth, local"]),
])
def test_bad_cell_parameters(kwargs, parts):
    with pytest.raises(ValueError) as info:
        Cell(**{**dict(dataset="digits", method="rs", classifier="a", sigma=0.25), **kwargs})
    expect(str(info.value), "invalid cell", *parts)


# --------------------------------------------------------------------------------------------------
# 11-13, 18: CLI arguments and the image selection

def test_unknown_cell_group_and_classifier_ids(cli):
    err = cli("certify", "--configfile", "config/fast.yaml", "--cell", "digits/sigma0.25/magic/x/y", "--shard", "0")
    expect(err, "no cell 'digits/sigma0.25/magic/x/y'", "diffsmooth cells --configfile")
    err = cli("certify", "--configfile", "config/fast.yaml", "--group", "digits/sigma9.00", "--shard", "0")
    expect(err, "unknown sigma group 'digits/sigma9.00'", f"use one of {GROUP}")
    err = cli("merge", "--configfile", "config/fast.yaml", "--cell", "nope")
    expect(err, "no cell 'nope'")
    err = cli("train-classifier", "--configfile", "config/fast.yaml", "--name", "nope")
    expect(err, "unknown classifier 'nope'", "use one of gaussian_0.00")


@pytest.mark.parametrize("shard", ["99", "-1"])
def test_shard_out_of_range(cli, shard):
    err = cli("certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", shard)
    expect(err, f"shard {shard} out of range", "2 shards (0..1)", "pass --shard between 0 and 1")


@pytest.mark.parametrize("shard", [["--shard", "0"], []])
def test_image_selection_beyond_the_test_set(cli, config_file, shard):
    """Shard 0 alone is fine (and finished), but the selection runs past the 300 test images: refused."""
    path = config_file(set_in("dataset", "images", "stop", value=400))
    err = cli("certify", "--configfile", path, "--group", GROUP, "--no-progress", *shard)
    expect(err, "image index 300 out of range", "digits has 300 test images", "stop=400",
           "set dataset.images.stop to at most 300")


@pytest.mark.parametrize("value, problem", [("0", "must be >= 1, got 0"), ("-2", "must be >= 1, got -2"),
                                            ("two", "'two' is not an integer")])
def test_threads_not_positive(cli, value, problem):
    err = cli("certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", "0", "--threads", value)
    expect(err, "argument --threads", problem, "omit --threads")


# --------------------------------------------------------------------------------------------------
# 14: corrupt rows files, for merge and for tables

@pytest.fixture
def own_results(tree, tmp_path):
    """A private copy of results/ to damage (passed with --results)."""
    dest = tmp_path / "results"
    shutil.copytree(tree / "results", dest)
    return dest


def _group_cells(tree):
    return build_grid(load_config(tree / "config" / "fast.yaml")).groups()[GROUP]


@pytest.mark.parametrize("damage, problem", [
    ("truncate", "truncated last line"),
    ("not_a_number", "column radius = 'abc' is not a number"),
    ("fields", "8 fields, expected 9"),
])
def test_merge_refuses_corrupt_shard_rows(cli, tree, own_results, damage, problem):
    """The group's last cell is damaged: no cell of the group is (re)written, the message names file and line."""
    cell = _group_cells(tree)[-1]
    shard = own_results / "digits-fast" / "cells" / cell_id(cell) / "shards" / "0001.tsv"
    lines = shard.read_text().split("\n")  # header, 20 rows, ''
    if damage == "truncate":
        text, line = "\n".join(lines[:-2]) + "\n" + lines[-2][:7], 21
    elif damage == "not_a_number":
        fields = lines[4].split("\t")
        fields[3] = "abc"
        text, line = "\n".join(lines[:4] + ["\t".join(fields)] + lines[5:]), 5
    else:
        text, line = "\n".join(lines[:4] + ["\t".join(lines[4].split("\t")[:8])] + lines[5:]), 5
    shard.write_text(text)
    err = cli("merge", "--configfile", "config/fast.yaml", "--group", GROUP, "--results", own_results,
              watch=[own_results])
    expect(err, f"{shard}:{line}:", problem, "delete it and 0001.json", "re-run shard 0001",
           f"--cell {cell_id(cell)} --shard 1")


def test_tables_refuse_corrupt_merged_rows(cli, tree, own_results, tmp_path):
    """A cell read only by the last table (figure3's m = 1): no table is written before the error."""
    grid = build_grid(load_config(tree / "config" / "fast.yaml"))
    last = [c for c in grid.tables[-1].rows[0].cells]
    assert all(c not in r.cells for t in grid.tables[:-1] for r in t.rows for c in last)
    rows = own_results / "digits-fast" / "cells" / cell_id(last[0]) / "rows.tsv"
    lines = rows.read_text().split("\n")
    lines[7] = lines[7].replace("\t", " ", 1)
    rows.write_text("\n".join(lines))
    out = tmp_path / "tables"
    err = cli("tables", "--configfile", "config/fast.yaml", "--results", own_results, "--out", out,
              watch=[own_results, out])
    expect(err, f"{rows}:8:", "8 fields, expected 9", "delete it and re-run the merge",
           f"diffsmooth merge --configfile <config> --cell {cell_id(last[0])}")


# --------------------------------------------------------------------------------------------------
# As real processes, and Snakemake's validation

def test_real_processes_exit_nonzero_with_the_message(tree, config_file):
    before = snapshot(tree)
    cases = [
        (["certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", "0", "--threads", "0"],
         "omit --threads"),
        (["certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", "99"],
         "pass --shard between 0 and 1"),
        (list(certify(config_file(set_in("certify", "alpha", value=2.0)))), "certify/alpha"),
    ]
    for argv, part in cases:
        proc = run(["diffsmooth", *map(str, argv)], tree, check=False, timeout=300)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert part in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert_unchanged(before, snapshot(tree))


def test_snakemake_validates_the_config(tree, config_file):
    path = config_file(set_in("certfy", value={"N": 10}))
    before = snapshot(tree)
    proc = run(["snakemake", "-n", "all_tables", "--configfile", str(path)], tree, check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    expect(out, "common.smk", "does not match workflow/schemas/config.schema.yaml",
           "Additional properties are not allowed", "'certfy' was unexpected", "remove or rename it")
    assert_unchanged(before, snapshot(tree))
