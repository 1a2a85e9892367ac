"""Certification throughput against the minimum work, measured in one run (ratios, not absolute times).

Builds the embedded-default models (digits MLPs; random weights are enough for timing, the work does
not depend on the weights) and one sigma group of the digits grid, then measures:
  (a) fused wall time of the group / its minimum work: the bare model forwards it cannot avoid
      (one purifier pass per noisy sample + max(m,1) classifier passes per head for its largest N, at the
      batch shapes the certifier uses: local draws folded FOLD_FACTOR per classifier forward);
  (b) speed-up of fused execution over certifying the same cells one job (Certifier) per cell;
  (c) certify wall time / bare forward time for a single DiffSmooth cell;
  (d) samples per second.
Usage: python bench/bench_certify.py [--config config/config.yaml] [--sigma 0.25] [--images 4] [--out bench/RESULTS.md]

On a GPU (random weights, real sizes; absolute seconds are meaningful only there):
  --gpu-cifar     the CIFAR-10 UNet + ResNet-110 DiffSmooth cell (sigma 0.25, sigma' 0.25 + 0.03, m = 21) for
                  every precision x compile combination: a small warm-up certification (compilation,
                  cudnn.benchmark autotuning, every batch shape), then one timed certification at
                  N = --gpu-cifar-n (10,000) scaled linearly to N = 100,000 (time is linear in n0 + N:
                  fixed-size batches); printed next to the paper's 240 s and the compute bound
                  (FLOPs per image / the device's dense peak for that precision).
  --gpu-imagenet  the ImageNet UNet (224x224) + ResNet-50 cell and + BEiT-L/16 cell (m = 21), same
                  procedure at N = --gpu-imagenet-n (100) scaled to N = 10,000.
  --record-dir D  also write one throughput record per combination (diffsmooth-throughput/1, the format
                  `diffsmooth throughput` writes): `diffsmooth plan --throughput D/<file>.json` uses it
                  when the config's certify settings match (precision, compile, batch size ...).
Device time, estimated from the issue #17 FLOP analysis for an H100/H200 (the budget guard enforces it):
  CIFAR-10: eager combos ~15-25 s each (build, warm-up, 10% of an image at fp32 ~4 s), compiled combos
  ~60-120 s each (inductor compiles the UNet and ResNet-110 for ~3 batch shapes): ~6 min for all six.
  ImageNet: fp32 ~40 s (2 cells x 200 samples x 1.7-4.3 TFLOP at ~50 TFLOP/s, plus warm-ups), tf32 and
  bf16 ~10-15 s each, bf16 + compile ~2 min: ~3 min. Together ~9 min < 10 min; --gpu-budget-s (default
  540) skips any combination that would start after the budget is spent and says so in its row.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffsmooth.grid import build_grid, load_config  # noqa: E402
from diffsmooth.plan import FLOPS_PER_FORWARD, forward_passes, group_budget  # noqa: E402
from diffsmooth.smoothing import FOLD_FACTOR, Certifier  # noqa: E402
from diffsmooth.throughput import device_name, random_classifier, random_purifier  # noqa: E402

SHAPE = (1, 8, 8)
# The CPU part's clock: wall time (perf_counter) by default; --clock process uses this process's CPU time,
# which a machine shared with other jobs does not inflate by descheduling (one torch thread, so CPU time
# is the work done).
CLOCK = [time.perf_counter]


def _models(config, cells):
    """The config's models with random weights, one classifier per name as certification loads them."""
    torch.manual_seed(0)
    clfs = {name: random_classifier(config, config["classifiers"][name]["arch"],
                                    config["classifiers"][name].get("normalization"), "cpu")
            for name in sorted({c.classifier for c in cells})}
    return clfs, random_purifier(config, torch.device("cpu"), cells[0].sigma)


@torch.inference_mode()
def bare_forward_seconds(cells, clfs, purifier, batch_size, images) -> float:
    """The unavoidable model forwards of these cells, at the certifier's batch shapes, nothing else."""
    n_purify, heads = group_budget(cells)
    draws = max(1, FOLD_FACTOR)  # local draws per classifier forward (Certifier default)
    x = torch.rand(batch_size * draws, *SHAPE)
    t0 = CLOCK[0]()
    for _ in range(images):
        for start in range(0, n_purify, batch_size):
            purifier(x[: min(batch_size, n_purify - start)])
        for (source, name, _, _), (n0, n, m) in heads.items():
            for phase in (n0, n):
                for start in range(0, phase, batch_size):
                    b = min(batch_size, phase - start)
                    for d0 in range(0, m, draws):
                        clfs[name](x[: b * (min(m, d0 + draws) - d0)])
    return CLOCK[0]() - t0


def certify_seconds(cells, clfs, purifier, batch_size, images, per_cell=False) -> float:
    x = torch.rand(*SHAPE)
    t0 = CLOCK[0]()
    groups = [[c] for c in cells] if per_cell else [cells]
    for group in groups:
        cert = Certifier(group, clfs, purifier, 10, SHAPE, batch_size=batch_size)
        for i in range(images):
            cert.certify(x, i)
    return CLOCK[0]() - t0


PAPER_SECONDS = {"cifar10": (240.0, "RTX A6000, N = 100,000, m = 21"),
                 "imagenet": (None, "not reported per cell")}
# Dense peak TFLOP/s of the H100 SXM / H200 (NVIDIA datasheets): fp32 CUDA cores, TF32 and bf16 tensor cores.
PEAK_TFLOPS = {"H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
               "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}}
COMBOS = [("fp32", False), ("tf32", False), ("bf16", False), ("fp32", True), ("tf32", True), ("bf16", True)]
IMAGENET_COMBOS = [("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True)]


def _peak(device_label: str, precision: str):
    return next((p[precision] for name, p in PEAK_TFLOPS.items() if name in device_label), None)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_cells(dataset: str, device: str, n_timed: int, batch_size: int | None, budget: dict,
              record_dir: str | None, combos=None, n0: int = 100) -> list[str]:
    """Seconds per image of the real-size DiffSmooth cells of `dataset` (random weights) for each precision
    x compile combination, scaled from a timed certification at N = n_timed to the paper's N."""
    import copy
    import json

    from diffsmooth.smoothing import Cell
    from diffsmooth.throughput import classifier_batch, new_record, samples_per_second

    root = Path(__file__).resolve().parent.parent
    base = load_config(root / "config" / f"{dataset}.yaml")
    device = torch.device(device)
    label = device_name(device)
    shape = (3, 32, 32) if dataset == "cifar10" else (3, 224, 224)
    n_full, m = (100_000, 21) if dataset == "cifar10" else (10_000, 21)
    bs = batch_size or base["certify"]["batch_size"]
    if dataset == "cifar10":
        cells = {"ResNet-110": ("cifar_resnet110", "cifar10_unet")}
    else:
        cells = {"ResNet-50": ("resnet50", "imagenet_unet"), "BEiT-L/16": ("beit_large_patch16_224", "imagenet_unet")}
    combos = combos or (COMBOS if dataset == "cifar10" else IMAGENET_COMBOS)
    paper, paper_note = PAPER_SECONDS[dataset]
    out = [f"### {dataset}: seconds per image at N = {n_full:,}, m = {m} (timed at N = {n_timed:,}, scaled by "
           f"(n0 + {n_full:,}) / (n0 + {n_timed:,})), batch {bs}, {label}, torch {torch.__version__}", "",
           "| cell | precision | compile | s per image | paper | compute bound at dense peak | "
           "combination wall (incl. warm-up) |", "|---|---|---|---|---|---|---|"]
    for precision, compiled in combos:
        for cell_name, (arch, unet) in cells.items():
            flops = (n0 + n_full) * (FLOPS_PER_FORWARD[unet] + m * FLOPS_PER_FORWARD[arch])
            peak = _peak(label, precision)
            bound = f"{flops / (peak * 1e12):.1f} s" if peak else "n/a (peak unknown for this device)"
            row = f"| {cell_name} | {precision} | {'yes' if compiled else 'no'} |"
            if time.perf_counter() - budget["start"] > budget["seconds"]:
                out.append(f"{row} not run: --gpu-budget-s spent | | {bound} | |")
                continue
            t_combo = time.perf_counter()
            config = copy.deepcopy(base)
            config["certify"].update({"precision": precision, "compile": compiled, "batch_size": bs})
            torch.manual_seed(0)
            purifier = random_purifier(config, device, 0.25)
            clf = random_classifier(config, arch, None, device)
            cell = Cell(dataset=dataset, method="diffsmooth", classifier="c", sigma=0.25, sigma_local=0.25,
                        shift=0.03, m=m, N=n_timed, n0=n0)
            warm = Cell(**{**cell.to_dict(), "N": 2 * bs})
            x = torch.rand(*shape)
            with torch.inference_mode():
                Certifier([warm], {"c": clf}, purifier, 1000 if dataset == "imagenet" else 10, shape,
                          batch_size=bs, device=device).certify(x, 0)  # compile, autotune, every shape
            cert = Certifier([cell], {"c": clf}, purifier, 1000 if dataset == "imagenet" else 10, shape,
                             batch_size=bs, device=device)
            _sync(device)
            t0 = time.perf_counter()
            cert.certify(x, 1)
            _sync(device)
            seconds = (time.perf_counter() - t0) * (n0 + n_full) / (n0 + n_timed)
            if record_dir:  # one record per (dataset, precision, compile), every classifier architecture in it
                path = Path(record_dir) / f"{dataset}-{precision}{'-compile' if compiled else ''}.json"
                record = (json.loads(path.read_text()) if path.exists() and path.stat().st_mtime > budget["wall"]
                          else new_record(config, device))
                xs = torch.rand(bs, *shape, device=device)
                record["purifier"] = samples_per_second(purifier, xs, 1.0)[0]
                xc = torch.rand(classifier_batch(bs, m), *shape, device=device)
                record["classifier_arch"][arch] = samples_per_second(clf, xc, 1.0)[0]
                record["timing"][f"bench_certify_s_per_image/{arch}"] = round(seconds, 3)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record, indent=1) + "\n")
            failed = [m_.failed for m_ in (clf, purifier.eps_model) if getattr(m_, "failed", None)]
            note = f" (compile failed, eager: {failed[0][:60]})" if failed else ""
            out.append(f"{row} {seconds:.1f}{note} | {f'{paper:.0f} s ({paper_note})' if paper else paper_note} | "
                       f"{bound} | {time.perf_counter() - t_combo:.0f} s |")
            del purifier, clf, cert
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out + [""]


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
    ap.add_argument("--repeats", type=int, default=5, help="interleaved best-of for each CPU measure")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="CPU part: wall time, or this process's CPU time (for a shared machine)")
    ap.add_argument("--gpu-cifar", action="store_true",
                    help="time the real-size CIFAR-10 cell (random weights) on --device for every precision x compile")
    ap.add_argument("--gpu-imagenet", action="store_true",
                    help="time the real-size ImageNet ResNet-50 and BEiT-L cells on --device")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpu-cifar-n", type=int, default=10_000, help="timed N, scaled to 100,000")
    ap.add_argument("--gpu-imagenet-n", type=int, default=100, help="timed N, scaled to 10,000")
    ap.add_argument("--gpu-batch", type=int, default=None, help="purifier batch (default: the config's)")
    ap.add_argument("--gpu-budget-s", type=float, default=540.0,
                    help="no GPU combination starts after this many seconds of the GPU part")
    ap.add_argument("--record-dir", help="write a throughput record per GPU combination here")
    ap.add_argument("--gpu-combos", help="comma-separated precision:compile pairs, e.g. fp32:eager,bf16:compile "
                    "(default: all of the dataset's)")
    ap.add_argument("--gpu-n0", type=int, default=100, help="n0 of the GPU cells (paper: 100; smaller for smoke tests)")
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [] if args.skip_cpu else cpu_lines(args)
    if args.gpu_cifar or args.gpu_imagenet:
        combos = None
        if args.gpu_combos:
            combos = [(p.split(":")[0], p.split(":")[1] == "compile") for p in args.gpu_combos.split(",")]
        budget = {"start": time.perf_counter(), "wall": time.time(), "seconds": args.gpu_budget_s}
        for flag, dataset, n in ((args.gpu_cifar, "cifar10", args.gpu_cifar_n),
                                 (args.gpu_imagenet, "imagenet", args.gpu_imagenet_n)):
            if flag:
                lines += gpu_cells(dataset, args.device, n, args.gpu_batch, budget, args.record_dir,
                                   combos=combos, n0=args.gpu_n0)
        lines.append(f"GPU part: {time.perf_counter() - budget['start']:.0f} s of device time.\n")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


def cpu_lines(args) -> list[str]:
    grid = build_grid(load_config(args.config))
    cells = next(cs for g, cs in grid.groups().items() if abs(cs[0].sigma - args.sigma) < 1e-9)
    bs = grid.config["certify"]["batch_size"]
    clfs, purifier = _models(grid.config, cells)
    single = next(c for c in cells if c.method == "diffsmooth" and c.m == grid.config["m"])

    certify_seconds(cells[:2], clfs, purifier, bs, 1)  # warm-up
    CLOCK[0] = time.perf_counter if args.clock == "wall" else time.process_time
    t = interleaved_best({
        "fused": lambda: certify_seconds(cells, clfs, purifier, bs, args.images),
        "minimum": lambda: bare_forward_seconds(cells, clfs, purifier, bs, args.images),
        "single": lambda: certify_seconds([single], clfs, purifier, bs, args.images),
        "single_bare": lambda: bare_forward_seconds([single], clfs, purifier, bs, args.images),
    }, repeats=args.repeats)
    fused, minimum, single_cert, single_bare = t["fused"], t["minimum"], t["single"], t["single_bare"]
    per_cell = certify_seconds(cells, clfs, purifier, bs, args.images, per_cell=True)
    fp = forward_passes(cells, fused=True)
    samples = fp["purifier"] + fp["classifier"]
    lines = [
        f"## {datetime.date.today().isoformat()}: {args.config}, σ = {args.sigma}, {len(cells)} cells, "
        f"{args.images} images, batch {bs}, {args.threads} thread(s), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {args.clock} clock, best of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| (a) fused time / minimum work (bare forwards) | {fused / minimum:.3f} ({fused:.2f} s / {minimum:.2f} s) | ≤ 1.15 |",
        f"| (b) speed-up of fused over one job per cell | {per_cell / fused:.2f}× ({per_cell:.2f} s / {fused:.2f} s) | — |",
        f"| (c) single DiffSmooth cell (m = {single.m}): certify / bare forwards | {single_cert / single_bare:.3f} "
        f"({single_cert:.2f} s / {single_bare:.2f} s) | ≤ 1.2 |",
        f"| (d) samples per second, fused (model forwards of single samples) | {samples * args.images / fused:,.0f} | — |",
        f"| per image, fused | {fused / args.images * 1000:.0f} ms | — |",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
