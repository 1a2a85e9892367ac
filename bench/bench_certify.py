"""Certification throughput against the minimum work, measured in one run (ratios, not absolute times).

Builds the embedded-default models (digits MLPs; random weights are enough for timing, the work does
not depend on the weights) and one sigma group of the digits grid, then measures:
  (a) fused wall time of the group / its minimum work: the bare model forwards it cannot avoid
      (one purifier pass per noisy sample + max(m,1) classifier passes per head for its largest N);
  (b) speed-up of fused execution over certifying the same cells one job (Certifier) per cell;
  (c) certify wall time / bare forward time for a single DiffSmooth cell;
  (d) samples per second.
Usage: python bench/bench_certify.py [--config config/config.yaml] [--sigma 0.25] [--images 5] [--out bench/RESULTS.md]
Optional on a GPU machine: --gpu-cifar (with --device cuda) runs the real-size CIFAR-10 UNet + ResNet-110 (random weights) at
N=100,000, m=21 and reports seconds per image next to the paper's 240 s (fp32 and bf16 autocast).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffsmooth.grid import build_grid, load_config  # noqa: E402
from diffsmooth.plan import forward_passes, group_budget  # noqa: E402
from diffsmooth.smoothing import Certifier  # noqa: E402
from diffsmooth.throughput import device_name, random_classifier, random_purifier  # noqa: E402

SHAPE = (1, 8, 8)


def _models(config, cells):
    """The config's models with random weights, one classifier per name as certification loads them."""
    torch.manual_seed(0)
    clfs = {name: random_classifier(config, config["classifiers"][name]["arch"],
                                    config["classifiers"][name].get("normalization"), "cpu")
            for name in sorted({c.classifier for c in cells})}
    return clfs, random_purifier(config, torch.device("cpu"), cells[0].sigma)


@torch.inference_mode()
def bare_forward_seconds(cells, clfs, purifier, batch_size, images) -> float:
    """The unavoidable model forwards of these cells, on the same batch size, nothing else."""
    n_purify, heads = group_budget(cells)
    x = torch.rand(batch_size, *SHAPE)
    t0 = time.perf_counter()
    for _ in range(images):
        for start in range(0, n_purify, batch_size):
            purifier(x[: min(batch_size, n_purify - start)])
        for (source, name, _, _), (n0, n, m) in heads.items():
            for phase in (n0, n):
                for start in range(0, phase, batch_size):
                    b = min(batch_size, phase - start)
                    for _ in range(m):
                        clfs[name](x[:b])
    return time.perf_counter() - t0


def certify_seconds(cells, clfs, purifier, batch_size, images, per_cell=False) -> float:
    x = torch.rand(*SHAPE)
    t0 = time.perf_counter()
    groups = [[c] for c in cells] if per_cell else [cells]
    for group in groups:
        cert = Certifier(group, clfs, purifier, 10, SHAPE, batch_size=batch_size)
        for i in range(images):
            cert.certify(x, i)
    return time.perf_counter() - t0


def cifar_real_size(device: str, n: int, m: int, batch_size: int) -> list[str]:
    """Real-size CIFAR-10 UNet (config/cifar10.yaml flags) + ResNet-110, random weights: seconds per image
    of one DiffSmooth cell (sigma 0.25, sigma' 0.25) at N = n, fp32 and bf16 autocast + channels-last."""
    import copy

    from diffsmooth.smoothing import Cell

    base = load_config(Path(__file__).resolve().parent.parent / "config" / "cifar10.yaml")
    device = torch.device(device)
    out = []
    for label, speed in (("fp32", {}), ("bf16 autocast + channels-last", {"autocast": "bf16", "channels_last": True})):
        config = copy.deepcopy(base)
        config["certify"].update(speed)
        torch.manual_seed(0)
        purifier = random_purifier(config, device, 0.25)
        clf = random_classifier(config, "cifar_resnet110", None, device)
        cell = Cell(dataset="cifar10", method="diffsmooth", classifier="r110", sigma=0.25, sigma_local=0.25,
                    shift=0.03, m=m, N=n, n0=100)
        cert = Certifier([cell], {"r110": clf}, purifier, 10, (3, 32, 32), batch_size=batch_size, device=device)
        x = torch.rand(3, 32, 32)
        cert.certify(x, 0)  # warm-up (cudnn autotune, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        cert.certify(x, 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out.append(f"| CIFAR-10 real size, {label}, N = {n:,}, m = {m}, batch {batch_size}, {device_name(device)} | "
                   f"{seconds:.1f} s per image | paper: 240 s (RTX A6000, N = 100,000, m = 21) |")
    return out


def interleaved_best(fns: dict, repeats: int = 5) -> dict:
    """Best of `repeats` for each function, run in turns so that drifting machine load hits all alike."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], fn())
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="append a dated record to this Markdown file")
    ap.add_argument("--gpu-cifar", action="store_true",
                    help="also time the real-size CIFAR-10 UNet + ResNet-110 (random weights) on --device")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpu-n", type=int, default=100_000, help="N for --gpu-cifar (paper: 100,000)")
    ap.add_argument("--gpu-batch", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = build_grid(load_config(args.config))
    cells = next(cs for g, cs in grid.groups().items() if abs(cs[0].sigma - args.sigma) < 1e-9)
    bs = grid.config["certify"]["batch_size"]
    clfs, purifier = _models(grid.config, cells)
    single = next(c for c in cells if c.method == "diffsmooth" and c.m == grid.config["m"])

    certify_seconds(cells[:2], clfs, purifier, bs, 1)  # warm-up
    t = interleaved_best({
        "fused": lambda: certify_seconds(cells, clfs, purifier, bs, args.images),
        "minimum": lambda: bare_forward_seconds(cells, clfs, purifier, bs, args.images),
        "single": lambda: certify_seconds([single], clfs, purifier, bs, args.images),
        "single_bare": lambda: bare_forward_seconds([single], clfs, purifier, bs, args.images),
    })
    fused, minimum, single_cert, single_bare = t["fused"], t["minimum"], t["single"], t["single_bare"]
    per_cell = certify_seconds(cells, clfs, purifier, bs, args.images, per_cell=True)
    fp = forward_passes(cells, fused=True)
    samples = fp["purifier"] + fp["classifier"]
    lines = [
        f"## {datetime.date.today().isoformat()}: {args.config}, σ = {args.sigma}, {len(cells)} cells, "
        f"{args.images} images, batch {bs}, {args.threads} thread(s), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| (a) fused wall / minimum work (bare forwards) | {fused / minimum:.3f} ({fused:.2f} s / {minimum:.2f} s) | ≤ 1.15 |",
        f"| (b) speed-up of fused over one job per cell | {per_cell / fused:.2f}× ({per_cell:.2f} s / {fused:.2f} s) | — |",
        f"| (c) single DiffSmooth cell (m = {single.m}): certify / bare forwards | {single_cert / single_bare:.3f} "
        f"({single_cert:.2f} s / {single_bare:.2f} s) | ≤ 1.2 |",
        f"| (d) samples per second, fused (model forwards of single samples) | {samples * args.images / fused:,.0f} | — |",
        f"| per image, fused | {fused / args.images * 1000:.0f} ms | — |",
        "",
    ]
    if args.gpu_cifar:
        lines[-1:-1] = cifar_real_size(args.device, args.gpu_n, 21, args.gpu_batch)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
