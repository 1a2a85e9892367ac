"""The paper configs end to end on stand-ins in the real formats (`diffsmooth stand-in`), as a new user or a
cluster admin runs them: stand-ins written by the CLI into a copy of the repository, `snakemake all_tables`,
the paper's tables with the paper's values side by side, and `diffsmooth audit --verify 1` on one cell.

The configs are the paper's, cut: sigma = 0.25 (plus the sigma = 0.50 group of CIFAR-10's Table 3), one or
two images, N = 4, n0 = 1 (alpha = 0.1) and small UNet flags. DIFFSMOOTH_E2E_REAL_SIZE=1 keeps the paper's
UNet flags (`make e2e-real-size`, docs/standin.md): the same runs with the real-size models.
"""
from __future__ import annotations

import csv
import os
import time

import pytest
import yaml

from diffsmooth.grid import build_grid, cell_id, validate_config

from conftest import REPO, copy_repo, run

REAL_SIZE = os.environ.get("DIFFSMOOTH_E2E_REAL_SIZE") == "1"
# N = 4 with alpha = 0.1 can certify radius 0 (0.1 ** (1 / 4) > 1/2), so the paper's radius-0 columns are
# compared; at the paper's alpha = 0.001 that takes N >= 10, and every column would be "not comparable".
N, N0, ALPHA = 4, 1, 0.1
# Small UNets of the two families (fully convolutional; attention only at the coarse levels, so the
# 224 x 224 ImageNet crops stay cheap). The diffusion flags (schedule, T, rescaling) stay the paper's.
SMALL_UNET = {
    "cifar10": {"num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "16",
                "num_heads": 2},
    "imagenet": {"num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1,2,2,4,4",
                 "attention_resolutions": "8", "num_head_channels": 32},
}


def cut_config(name: str, experiment: str, tables, models=None, images: int = 1, m: int | None = None) -> dict:
    """config/<name>.yaml at sigma = 0.25 (sigma' <= 0.25), images 0 .. images-1, N = 4, n0 = 1, alpha = 0.1 and
    small UNet flags; `models`: keep only these; `m`: local draws instead of the paper's 21."""
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    cfg["experiment"] = experiment
    cfg["dataset"]["images"] = {"start": 0, "stop": images, "skip": 1}
    cfg["threads"] = 1
    cfg["sigmas"] = [0.25]
    cfg["certify"].update(N=N, n0=N0, alpha=ALPHA, batch_size=256, shard_size=images)
    if m is not None:
        cfg["m"] = m
    if models is not None:
        cfg["models"] = [mod for mod in cfg["models"] if mod["id"] in models]
    for mod in cfg["models"]:
        mod["grid"] = {"0.25": mod["grid"]["0.25"]}
        if isinstance(mod.get("shift"), dict):  # per-sigma shifts (ImageNet)
            mod["shift"] = {"0.25": mod["shift"]["0.25"]}
    ids = {mod["id"] for mod in cfg["models"]}
    cfg["tables"] = {k: v for k, v in cfg["tables"].items() if k in tables}
    for spec in cfg["tables"].values():
        if "model_sigmas" in spec:
            spec["model_sigmas"] = {k: v for k, v in spec["model_sigmas"].items() if k in ids}
        if spec["kind"] == "equal_budget":  # the paper's N x m = budget, at N = 4 x m = 5
            spec["budget"] = 20
            spec["settings"] = [{"N": 4, "m": 5}, {"N": 2, "m": 10}, {"N": 1, "m": 20}]
        if spec["kind"] == "m_ladder":
            spec["pairs"] = [p for p in spec["pairs"] if p[0] == 0.25]
    if not REAL_SIZE:
        cfg["diffusion"]["flags"] = {**cfg["diffusion"]["flags"], **SMALL_UNET[name]}
    validate_config(cfg)
    return cfg


def _setup(tmp_path, name: str, cfg: dict, *standin_options) -> tuple:
    root = copy_repo(tmp_path / "repo")
    config = f"config/{cfg['experiment']}.yaml"
    (root / config).write_text(yaml.safe_dump(cfg, sort_keys=False))
    # written in the copy now, so they are newer than the code (see workflow/rules/train.smk)
    proc = run(["diffsmooth", "stand-in", "--configfile", config, *standin_options], root, timeout=900)
    assert "stand-in(s) written" in proc.stdout, proc.stdout
    return root, config


def _timed(label, timings, fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    timings[label] = round(time.monotonic() - start, 1)
    return out


def _check_tables(root, cfg) -> None:
    grid = build_grid(cfg)
    tables = root / "results" / "tables" / cfg["experiment"]
    comparison = (tables / "comparison.md").read_text()
    for spec in grid.tables:
        assert (tables / f"{spec.id}.md").exists(), spec.id
        if spec.kind == "m_ladder":
            assert (tables / f"{spec.id}.png").exists()
            continue
        assert spec.id in comparison, spec.id
        with open(tables / f"{spec.id}.compare.csv") as f:
            records = list(csv.DictReader(f))
        ours = [r for r in records if r["row"]]  # the others are paper rows without a row of ours
        assert {int(r["row"]) for r in ours} == set(range(1, len(spec.rows) + 1)), spec.id
        if spec.kind == "equal_budget":
            # its rows are matched by N and m, which the cut changed: listed, with no paper row to compare
            assert {r["status"] for r in ours} == {"no paper row"}, spec.id
        else:
            compared = [r for r in ours if r["status"] == "compared"]
            assert compared, f"{spec.id}: no cell with the paper's value and ours side by side"
            assert all(r["paper"] and r["ours"] not in ("", "−") for r in compared), spec.id


@pytest.mark.slow
def test_cifar10_paper_config_on_stand_ins(tmp_path):
    """Every table of config/cifar10.yaml, every cell at sigma = 0.25 (and Table 3's sigma = 0.50), on the
    stand-in test_batch (Python 2 pickle), legacy-format Cohen/SmoothAdv ResNet-110 and the improved-diffusion
    UNet layout; then the audit re-certifies one image of a DiffSmooth cell and finds the same row."""
    cfg = cut_config("cifar10", "e2e-cifar10", ("table1", "table3", "table4", "table6", "table12", "figure3"),
                     images=2 if REAL_SIZE else 1)
    timings: dict = {}
    root, config = _timed("copy + stand-in", timings, _setup, tmp_path, "cifar10", cfg, "--cifar-images", "50")
    proc = _timed("snakemake", timings, run, ["snakemake", "-c2", "all_tables", "--configfile", config], root,
                  timeout=1800)
    assert "train_" not in proc.stdout + proc.stderr  # nothing is trained: the checkpoints are the user's
    _check_tables(root, cfg)
    cell = next(c for c in build_grid(cfg).cells if c.method == "diffsmooth" and c.m == 21)
    proc = _timed("audit", timings, run, ["diffsmooth", "audit", "--configfile", config, "--cell-id", cell_id(cell),
                                          "--verify", "1"], root, timeout=900)
    assert proc.returncode == 0
    print(f"cifar10 e2e timings (s): {timings}")


@pytest.mark.slow
def test_imagenet_paper_config_on_stand_ins(tmp_path):
    """config/imagenet.yaml's ResNet-50 models (keys 1.module.*, legacy format, cuda:0 tags) through the
    ImageFolder path: 1000 wnid folders, the grayscale and the CMYK JPEG among the certified images."""
    cfg = cut_config("imagenet", "e2e-imagenet", ("table5", "table11"), models=("resnet50_gaussian",), images=2, m=3)
    timings: dict = {}
    root, config = _timed("copy + stand-in", timings, _setup, tmp_path, "imagenet", cfg, "--images-per-class", "1")
    proc = _timed("snakemake", timings, run, ["snakemake", "-c2", "all_tables", "--configfile", config], root,
                  timeout=1800)
    assert "train_" not in proc.stdout + proc.stderr
    _check_tables(root, cfg)
    print(f"imagenet e2e timings (s): {timings}")


@pytest.mark.slow
def test_beit_stand_in_loads_through_the_classifier_loader(tmp_path):
    """DiffSmooth's BEiT-L/16 container at full size (1.2 GB): zip, cuda:0 tags, timm 0.9's persistent
    relative_position_index buffers, which the strict loader accepts because their values equal ours."""
    import zipfile

    import torch

    from diffsmooth import standin
    from diffsmooth.models import load_classifier

    spec = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())["classifiers"]["beit_0.25"]
    path = standin.write_classifier(tmp_path / "checkpoint.pth.tar", spec["arch"], "imagenet",
                                    spec["normalization"], seed=0)
    assert zipfile.is_zipfile(path)
    seen = []
    ckpt = torch.load(path, map_location=lambda s, loc: (seen.append(loc), s)[1], weights_only=True)
    assert set(seen) == {"cuda:0"} and list(ckpt) == ["epoch", "arch", "state_dict"]
    state = ckpt["state_dict"]
    index = [k for k in state if k.endswith("attn.relative_position_index")]
    assert len(index) == 24 and state[index[0]].dtype == torch.int64
    assert list(state).index(index[0]) == list(state).index("1.blocks.0.attn.relative_position_bias_table") + 1
    del ckpt, state
    model, info = load_classifier(path, "imagenet", arch=spec["arch"], normalization="vit", compute_sha256=False)
    assert info["format"] == "checkpoint_dict" and info["dropped_non_persistent"] == 24
    assert info["num_parameters"] == 304_430_568  # BEiT-L/16-224, 1000 classes
