"""The planner: jobs, forward passes and estimated GPU-hours per table, fused vs. one job per cell.

Forward passes are counted in samples (one image through one model). Fused execution pays one
purifier pass per noisy sample of a sigma group and, per head (classifier, sigma', local noise),
max(m, 1) classifier passes for the samples its largest-N cell needs; per-cell execution pays them
for every cell separately. Seconds come from throughputs (samples/s), later sources winning:
paper-derived defaults, `certify.throughput` of the config, then a record measured on your GPUs by
`diffsmooth throughput` (results/<experiment>/throughput.json, or `diffsmooth plan --throughput FILE`).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from .grid import Grid, cell_id, group_id

# samples/s. CIFAR-10 and ImageNet from the paper (Sec. 5.3): 90 s of 240 s per image at N=100k, m=21
# is diffusion (1.1k samples/s), the m-dependent rest 7.15 s per 100k classifier passes; ImageNet
# 553 s per 10k diffusion samples, 10.6 s per 10k ResNet-50 passes. Digits: `diffsmooth throughput
# --configfile config/config.yaml` on a 2-core CPU, 1 thread, batch 1100 (2026-11-25: 59.8k and 484k).
DEFAULT_THROUGHPUT = {
    "digits": {"purifier": 60_000, "classifier": 480_000},
    "cifar10": {"purifier": 1_111, "classifier": 14_000},
    "imagenet": {"purifier": 18.1, "classifier": 943},
}
DEFAULT_MEM_MB = {"digits": 3000, "cifar10": 16000, "imagenet": 48000}
# FLOPs of one forward of one sample (multiply-add = 2 FLOPs), measured with
# torch.utils.flop_counter.FlopCounterMode on the project's builders on the meta device (torch 2.14.1;
# throughput.flops_per_forward, re-measured in tests/test_throughput.py): the BEiT default below and
# the benchmark's compute bounds. Plain numbers, so the workflow imports the planner without torch.
FLOPS_PER_FORWARD = {
    "cifar10_unet": 16.773e9,            # improved-diffusion cifar10_uncond_50M_500K flags, 32x32
    "imagenet_unet": 1712.584e9,         # guided-diffusion 256x256_diffusion_uncond flags, at 224x224
    "cifar_resnet110": 0.5063e9,
    "resnet50": 8.1784e9,
    "beit_large_patch16_224": 123.109e9,
}
# Classifier architectures much slower than the dataset's default (samples/s), overridable with
# `certify.throughput.classifier_arch`. BEiT-L/16-224 is not timed in the paper, so its rate comes from
# FLOPs (FLOPS_PER_FORWARD above, torch's FlopCounterMode on the models built on the meta device):
# BEiT is large dense matmuls, compute-bound like the ImageNet UNet, so it is given the UNet's achieved
# rate on the paper's GPU: 18.08 samples/s x 1,712.6 GFLOP = 31.0 TFLOP/s, / 123.1 GFLOP per BEiT
# forward = 252 samples/s. (Scaling ResNet-50's rate by FLOPs instead, 943 x 8.18 / 123.1 = 63 samples/s,
# transfers a memory-bound model's low utilisation and overstates BEiT's GPU-hours ~4x.) An estimate:
# `diffsmooth throughput` or bench/bench_certify.py --gpu-imagenet measure it.
DEFAULT_ARCH_THROUGHPUT = {"imagenet": {"beit_large_patch16_224": round(
    DEFAULT_THROUGHPUT["imagenet"]["purifier"] * FLOPS_PER_FORWARD["imagenet_unet"]
    / FLOPS_PER_FORWARD["beit_large_patch16_224"])}}


def forward_passes(cells, fused: bool = True) -> dict:
    """Per-image forward passes (samples) of the purifier and the classifiers for these cells."""
    cells = list(cells)
    if not fused:
        purifier = sum(c.n0 + c.N for c in cells if c.uses_diffusion)
        classifier = sum(max(c.m, 1) * (c.n0 + c.N) for c in cells)
        return {"purifier": purifier, "classifier": classifier}
    purifier = classifier = 0
    groups: dict = {}
    for c in cells:
        groups.setdefault(c.group, []).append(c)
    for gcells in groups.values():
        n_purify, heads = group_budget(gcells)
        purifier += n_purify
        classifier += sum(m * (n0 + n) for n0, n, m in heads.values())
    return {"purifier": purifier, "classifier": classifier}


def group_budget(cells) -> tuple[int, dict]:
    """What the cells of one sigma group need per image: purifier samples (n0 + N of its largest diffusion
    cells) and, per head, the largest (n0, N, max(m, 1)); smaller m and N are read as prefixes of these."""
    diff = [c for c in cells if c.uses_diffusion]
    n_purify = (max(c.n0 for c in diff) + max(c.N for c in diff)) if diff else 0
    heads: dict = {}
    for c in cells:
        n0, n, m = heads.get(c.head, (0, 0, 0))
        heads[c.head] = (max(n0, c.n0), max(n, c.N), max(m, c.m, 1))
    return n_purify, heads


def throughput(grid: Grid, results="results", measured=None) -> dict:
    """samples/s: purifier, classifier (the dataset's default), classifier_arch {arch: samples/s}, and
    `sources` naming where each number comes from. `measured`: a throughput record file; without it,
    results/<experiment>/throughput.json is used when present and measured with the config's settings."""
    from .throughput import ThroughputError, default_path, read_record

    ds = grid.config["dataset"]["name"]
    cfg = grid.config["certify"].get("throughput", {})
    tp = {**DEFAULT_THROUGHPUT[ds], "classifier_arch": dict(DEFAULT_ARCH_THROUGHPUT.get(ds, {}))}
    sources = {k: "paper-derived default" if ds != "digits" else "default (measured on a 2-core CPU)"
               for k in ("purifier", "classifier", *tp["classifier_arch"])}
    for key, value in cfg.items():
        if key == "classifier_arch":
            tp["classifier_arch"].update(value)
            sources.update({arch: "config certify.throughput" for arch in value})
        else:
            tp[key] = value
            sources[key] = "config certify.throughput"
    path = Path(measured) if measured is not None else default_path(results, grid.experiment)
    record = None
    if measured is not None:
        record = read_record(path, grid.config)
    elif path.exists():
        try:
            record = read_record(path, grid.config)
        except ThroughputError as e:  # found, not asked for: say why it is not used, plan on
            print(f"warning: {e} (planning without it)", file=sys.stderr)
    if record is not None:
        origin = f"measured on {record['device']}, {record['date'][:10]}: {path}"
        if record.get("purifier"):
            tp["purifier"] = record["purifier"]
            sources["purifier"] = origin
        tp["classifier_arch"].update(record["classifier_arch"])
        sources.update({arch: origin for arch in record["classifier_arch"]})
    tp["sources"] = sources
    return tp


def seconds_per_image(grid: Grid, cells, fused: bool = True, tp: dict | None = None) -> float:
    tp = tp or throughput(grid)
    cells = list(cells)
    fp = forward_passes(cells, fused)
    seconds = fp["purifier"] / tp["purifier"]
    arch_of = {name: spec.get("arch") for name, spec in grid.config["classifiers"].items()}
    for arch in {arch_of.get(c.classifier) for c in cells}:  # classifier passes per architecture
        sub = [c for c in cells if arch_of.get(c.classifier) == arch]
        seconds += forward_passes(sub, fused)["classifier"] / tp["classifier_arch"].get(arch, tp["classifier"])
    return seconds


def job_estimate(grid: Grid, cells, images, tp: dict | None = None) -> dict:
    """SLURM resources for one job: runtime with 50% headroom plus start-up, memory by dataset."""
    seconds = seconds_per_image(grid, cells, True, tp) * len(images)
    return {"seconds": seconds, "runtime_min": int(math.ceil(1.5 * seconds / 60 + 5)),
            "mem_mb": DEFAULT_MEM_MB[grid.config["dataset"]["name"]]}


def make_plan(grid: Grid, results="results", measured=None) -> dict:
    images = len(grid.images())
    shards = len(grid.shards())
    tp = throughput(grid, results, measured)
    tables = {}
    for spec in grid.tables:
        cells = list(dict.fromkeys(c for row in spec.rows for c in row.cells if cell_id(c) not in grid.imported))
        tables[spec.id] = _summary(grid, cells, images, shards, tp)
    computed = [c for c in grid.cells if cell_id(c) not in grid.imported]  # imported cells cost no GPU time
    return {"experiment": grid.experiment, "images": images, "shards": shards,
            "groups": len(grid.groups()), "tables": tables, "imported": len(grid.imported),
            "total": _summary(grid, computed, images, shards, tp), "throughput": tp}


def _summary(grid, cells, images, shards, tp) -> dict:
    fused, per_cell = forward_passes(cells, True), forward_passes(cells, False)
    return {
        "cells": len(cells),
        "jobs_fused": len({group_id(c) for c in cells}) * shards,
        "jobs_per_cell": len(cells) * shards,
        "forward_passes_fused": {k: v * images for k, v in fused.items()},
        "forward_passes_per_cell": {k: v * images for k, v in per_cell.items()},
        "gpu_hours_fused": seconds_per_image(grid, cells, True, tp) * images / 3600,
        "gpu_hours_per_cell": seconds_per_image(grid, cells, False, tp) * images / 3600,
    }


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 1 else f"{h:.2g}"


def print_plan(plan: dict) -> str:
    from tabulate import tabulate

    rows = []
    for name, s in list(plan["tables"].items()) + [("TOTAL", plan["total"])]:
        rows.append([name, s["cells"], s["jobs_fused"], s["jobs_per_cell"],
                     f"{sum(s['forward_passes_fused'].values()):.3g}", f"{sum(s['forward_passes_per_cell'].values()):.3g}",
                     _hours(s["gpu_hours_fused"]), _hours(s["gpu_hours_per_cell"])])
    head = ["table", "cells", "jobs (fused)", "jobs (per cell)", "forwards (fused)", "forwards (per cell)",
            "GPU-h (fused)", "GPU-h (per cell)"]
    tp = plan["throughput"]
    rates = [("purifier", tp["purifier"]), ("classifier", tp["classifier"]), *tp["classifier_arch"].items()]
    lines = "\n".join(f"  {name}: {rate:,.1f} samples/s ({tp['sources'].get(name, '')})" for name, rate in rates)
    return (f"experiment {plan['experiment']}: {plan['images']} images in {plan['shards']} shards, "
            f"{plan['groups']} sigma groups"
            + (f", {plan['imported']} imported cells (`imports:`, not counted below)" if plan.get("imported") else "")
            + f"\nthroughput (classifier: any architecture not listed below)\n{lines}\n"
            "(tables share cells, so their rows do not add up to the total)\n"
            + tabulate(rows, headers=head, tablefmt="simple", disable_numparse=True))
