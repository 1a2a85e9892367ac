"""bench/bench_certify.py: the CPU ratios and the GPU table's code path (run on the CPU at toy sizes)."""
import argparse
import copy
import importlib.util
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_certify", REPO / "bench" / "bench_certify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_part_prints_the_ratios_with_their_targets():
    bench = _bench()
    args = argparse.Namespace(config=str(REPO / "config" / "config.yaml"), sigma=0.25, images=1, threads=1,
                              repeats=1, clock="process")
    text = "\n".join(bench.cpu_lines(args))
    assert "(a) fused time / minimum work" in text and "≤ 1.15" in text and "≤ 1.2" in text
    assert "process clock, best of 1" in text


def test_gpu_table_code_path_and_its_throughput_record(tmp_path):
    """Toy sizes on the CPU (N = 2, n0 = 2, batch 2, fp32 eager): the row, the record `plan` reads, the budget."""
    from diffsmooth.grid import load_config
    from diffsmooth.throughput import read_record

    bench = _bench()
    budget = {"start": time.perf_counter(), "wall": time.time(), "seconds": 1e9}
    lines = bench.gpu_cells("cifar10", "cpu", 2, 2, budget, str(tmp_path), combos=[("fp32", False)], n0=2)
    row = next(line for line in lines if line.startswith("| ResNet-110 | fp32 | no |"))
    assert "240 s" in row and "not run" not in row
    config = copy.deepcopy(load_config(REPO / "config" / "cifar10.yaml"))
    config["certify"]["batch_size"] = 2
    record = read_record(tmp_path / "cifar10-fp32.json", config)
    assert record["purifier"] > 0 and record["classifier_arch"]["cifar_resnet110"] > 0
    spent = {"start": time.perf_counter() - 10, "wall": time.time(), "seconds": 0}
    lines = bench.gpu_cells("cifar10", "cpu", 2, 2, spent, None, combos=[("bf16", True)], n0=2)
    assert any("not run: --gpu-budget-s spent" in line for line in lines)
