"""Measured throughput: `diffsmooth throughput` times the config's models on a device; the planner and the
SLURM runtimes use that record instead of the defaults, and refuse or skip one measured with other settings."""
from __future__ import annotations

import copy
import io
import json
import re

import pytest

from diffsmooth.grid import build_grid, load_config
from diffsmooth.plan import forward_passes, job_estimate, make_plan, throughput
from diffsmooth.rows import atomic_write_json
from diffsmooth.throughput import FORMAT, ThroughputError, default_path, measure, read_record, settings

from conftest import REPO, copy_repo, run

FAST = REPO / "config" / "fast.yaml"


@pytest.fixture(scope="module")
def grid():
    return build_grid(load_config(FAST))


def _record(config, purifier, archs, **changes):
    return {"format": FORMAT, **settings(config), "experiment": config["experiment"], "device": "test GPU",
            "torch": "x", "date": "2026-01-02T00:00:00+00:00", "purifier": purifier, "classifier_arch": archs,
            "timing": {}, **changes}


def _write(results, grid, record):
    path = default_path(results, grid.experiment)
    atomic_write_json(path, record)
    return path


def test_measure_times_the_purifier_and_every_classifier_architecture(grid, tmp_path):
    record = measure(grid.config, grid.cells, "cpu", min_seconds=0.05, log=io.StringIO())
    archs = {grid.config["classifiers"][c.classifier]["arch"] for c in grid.cells}
    assert set(record["classifier_arch"]) == archs == {"digits_mlp"}
    assert record["purifier"] > 0 and all(r > 0 for r in record["classifier_arch"].values())
    assert record["timing"]["purifier"]["batches"] >= 3 and record["timing"]["purifier"]["seconds"] >= 0.05
    assert {k: record[k] for k in settings(grid.config)} == settings(grid.config)
    path = _write(tmp_path, grid, record)
    assert read_record(path, grid.config) == json.loads(json.dumps(record))


def test_measure_builds_the_real_size_cifar10_models():
    """The paper's CIFAR-10 UNet (from the manifest flags) and ResNet-110, random weights; batch 1 on this CPU."""
    config = copy.deepcopy(load_config(REPO / "config" / "cifar10.yaml"))
    config["certify"]["batch_size"] = 1
    cells = build_grid(config).cells
    record = measure(config, cells, "cpu", min_seconds=0.0, log=io.StringIO())
    assert record["purifier"] > 0 and set(record["classifier_arch"]) == {"cifar_resnet110"}
    assert record["diffusion"] == "improved_diffusion_cifar10_uncond_50M_500K"


def test_plan_uses_the_measured_record(grid, tmp_path):
    p_rate, c_rate = 1234.0, 5678.0
    path = _write(tmp_path, grid, _record(grid.config, p_rate, {"digits_mlp": c_rate}))
    plan = make_plan(grid, results=tmp_path)
    images = plan["images"]
    for fused, key in ((True, "gpu_hours_fused"), (False, "gpu_hours_per_cell")):
        fp = forward_passes(grid.cells, fused)
        expected = images * (fp["purifier"] / p_rate + fp["classifier"] / c_rate) / 3600
        assert plan["total"][key] == pytest.approx(expected, rel=1e-12)
    sources = plan["throughput"]["sources"]
    assert sources["purifier"] == sources["digits_mlp"] == f"measured on test GPU, 2026-01-02: {path}"
    # the SLURM runtime of a fused job follows the same rates
    shard = build_grid(grid.config).shards()[0]
    est = job_estimate(grid, grid.cells, shard, plan["throughput"])
    fp = forward_passes(grid.cells, True)
    assert est["seconds"] == pytest.approx(len(shard) * (fp["purifier"] / p_rate + fp["classifier"] / c_rate))
    # the same record named explicitly, from anywhere
    assert make_plan(grid, results=tmp_path / "elsewhere", measured=path)["total"] == plan["total"]


def test_later_sources_win_defaults_then_config_then_measured(tmp_path):
    config = copy.deepcopy(load_config(FAST))
    config["certify"]["throughput"] = {"purifier": 11.0, "classifier_arch": {"digits_mlp": 22.0}}
    grid = build_grid(config)
    tp = throughput(grid, results=tmp_path)
    assert (tp["purifier"], tp["classifier_arch"]["digits_mlp"]) == (11.0, 22.0)
    assert tp["sources"]["purifier"] == "config certify.throughput"
    assert tp["sources"]["classifier"].startswith("default")
    _write(tmp_path, grid, _record(config, 33.0, {}))  # measured purifier only: the classifier stays as configured
    tp = throughput(grid, results=tmp_path)
    assert (tp["purifier"], tp["classifier_arch"]["digits_mlp"]) == (33.0, 22.0)
    assert tp["sources"]["purifier"].startswith("measured")


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"compile": True}, {"batch_size": 7}, {"channels_last": True},
                                    {"dataset": "cifar10"}, {"diffusion": "another_model"}])
def test_a_record_measured_with_other_settings_is_refused_or_skipped(grid, tmp_path, capsys, change):
    path = _write(tmp_path, grid, _record(grid.config, 1.0, {"digits_mlp": 1.0}, **change))
    key = next(iter(change))
    with pytest.raises(ThroughputError, match=f"{key}: measured .*diffsmooth throughput"):
        make_plan(grid, measured=path)
    plan = make_plan(grid, results=tmp_path)  # found in results/, not asked for: a warning, then the defaults
    assert "warning" in capsys.readouterr().err and plan["throughput"]["purifier"] != 1.0
    assert not plan["throughput"]["sources"]["purifier"].startswith("measured")


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"purifier": 1.0}), "not a throughput record"),
    (None, "samples/s must be positive"),
])
def test_a_corrupt_record_is_refused_with_the_fix(grid, tmp_path, content, message):
    path = tmp_path / "throughput.json"
    if content is None:
        content = json.dumps(_record(grid.config, -5.0, {"digits_mlp": 1.0}))
    path.write_text(content)
    with pytest.raises(ThroughputError, match=message + ".*diffsmooth throughput"):
        read_record(path, grid.config)
    with pytest.raises(ThroughputError, match="does not exist"):
        read_record(tmp_path / "missing.json", grid.config)


def test_cli_measures_and_plan_reports_it(tmp_path):
    run(["diffsmooth", "throughput", "--configfile", "config/fast.yaml", "--seconds", "0.05",
         "--results", str(tmp_path)], REPO)
    record = json.loads((tmp_path / "digits-fast" / "throughput.json").read_text())
    assert record["device"].startswith("cpu")
    out = run(["diffsmooth", "plan", "--configfile", "config/fast.yaml", "--results", str(tmp_path)], REPO).stdout
    assert f"purifier: {record['purifier']:,.1f} samples/s (measured on cpu" in out
    bad = run(["diffsmooth", "plan", "--configfile", "config/fast.yaml", "--throughput", str(tmp_path / "nope.json")],
              REPO, check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "diffsmooth throughput" in bad.stderr


@pytest.mark.slow
def test_workflow_rule_measures_and_job_runtimes_follow_it(tmp_path):
    """`snakemake measure_throughput` writes the record; the certification jobs' SLURM runtime then comes from it."""
    root = copy_repo(tmp_path / "repo")
    config = ["--configfile", "config/fast.yaml"]  # last: --configfile takes several values
    run(["snakemake", "-c1", "measure_throughput"] + config, root)
    record = json.loads((root / "results" / "digits-fast" / "throughput.json").read_text())
    assert record["format"] == FORMAT and record["timing"]["purifier"]["seconds"] >= 10  # the CLI default

    def runtimes():
        out = run(["snakemake", "-n", "all_certified"] + config, root).stdout
        return sorted({int(r) for r in re.findall(r"rule certify_group:.*?runtime=(\d+)", out, re.S)})

    before = runtimes()
    slow = _record(load_config(root / "config" / "fast.yaml"), 1.0, {"digits_mlp": 1.0})
    atomic_write_json(root / "results" / "digits-fast" / "throughput.json", slow)
    after = runtimes()
    assert before and after and min(after) > max(before)
    # the record is up to date for this config; a new batch size makes Snakemake measure again
    assert "Nothing to be done" in run(["snakemake", "-n", "measure_throughput"] + config, root).stdout
    fast = root / "config" / "fast.yaml"
    fast.write_text(re.sub(r"(\n  batch_size:) \d+", r"\1 500", fast.read_text(), count=1))
    out = run(["snakemake", "-n", "measure_throughput"] + config, root).stdout
    assert "rule measure_throughput:" in out and "Params have changed" in out


def test_flops_per_forward_are_what_flopcounter_measures():
    """The planner's FLOP table (plain numbers, no torch import) against FlopCounterMode on the meta device."""
    import yaml

    from diffsmooth.models import classifier, unet_from_flags
    from diffsmooth.plan import FLOPS_PER_FORWARD
    from diffsmooth.throughput import flops_per_forward

    flags = yaml.safe_load(open("config/cifar10.yaml"))["diffusion"]["flags"]
    measured = {
        "cifar10_unet": flops_per_forward(lambda: unet_from_flags(flags), (1, 3, 32, 32), (1,)),
        "cifar_resnet110": flops_per_forward(lambda: classifier("cifar_resnet110", "cifar10"), (1, 3, 32, 32)),
        "beit_large_patch16_224": flops_per_forward(lambda: classifier("beit_large_patch16_224", "imagenet"),
                                                    (1, 3, 224, 224)),
    }
    for name, flops in measured.items():
        assert abs(flops / FLOPS_PER_FORWARD[name] - 1) < 1e-3, (name, flops)


def test_beit_default_rate_comes_from_flops():
    from diffsmooth.plan import DEFAULT_ARCH_THROUGHPUT, DEFAULT_THROUGHPUT, FLOPS_PER_FORWARD

    achieved = DEFAULT_THROUGHPUT["imagenet"]["purifier"] * FLOPS_PER_FORWARD["imagenet_unet"]  # FLOP/s
    assert 30e12 < achieved < 32e12
    beit = DEFAULT_ARCH_THROUGHPUT["imagenet"]["beit_large_patch16_224"]
    assert beit == round(achieved / FLOPS_PER_FORWARD["beit_large_patch16_224"]) == 252
