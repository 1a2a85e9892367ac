"""Measured forward throughput (samples/s) of an experiment's models, for the planner and SLURM runtimes.

Certification time is model forwards: one purifier pass per noisy sample and max(m, 1) classifier passes
per head (plan.forward_passes). `measure` times exactly those forwards on a device, at the config's batch
size and speed settings (precision, compile, channels-last), with random weights: the time does not depend on the
weights, so this runs before any checkpoint is in place. `diffsmooth throughput` writes the record to
results/<experiment>/throughput.json; `diffsmooth plan` and the certification jobs' SLURM runtimes then
use it instead of the paper-derived defaults.
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from pathlib import Path

FORMAT = "diffsmooth-throughput/1"
FILENAME = "throughput.json"

# torch is imported inside the measuring functions: the planner and the workflow read records and settings
# from here, and parsing the Snakefile must not pay torch's import.


def flops_per_forward(build, *shapes) -> int:
    """FLOPs of one forward of `build()` on inputs of `shapes`, counted on the meta device (no memory, no
    weights initialised): FlopCounterMode counts matmuls and convolutions from the shapes. The source of
    plan.FLOPS_PER_FORWARD."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build().eval()
        args = [torch.empty(s) for s in shapes]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args)
    return counter.get_total_flops()


class ThroughputError(ValueError):
    pass


def default_path(results, experiment: str) -> Path:
    from .paths import Layout

    return Layout(results, experiment).throughput


def settings(config: dict) -> dict:
    """What a throughput depends on besides the machine; a record measured with other settings is stale."""
    c = config["certify"]
    return {"dataset": config["dataset"]["name"], "diffusion": config["diffusion"]["name"],
            "batch_size": c["batch_size"], "precision": c["precision"], "compile": c["compile"],
            "channels_last": c["channels_last"]}


def classifier_archs(config: dict, cells) -> dict:
    """{arch: normalization} of the classifiers these cells use (one timing per architecture)."""
    archs = {}
    for name in sorted({c.classifier for c in cells}):
        spec = config["classifiers"][name]
        archs.setdefault(spec["arch"], spec.get("normalization"))
    return archs


def random_purifier(config: dict, device, sigma: float):
    """The config's diffusion model with random weights, wrapped as the certifier uses it."""
    import torch

    from .certify import speed_settings
    from .config import Settings
    from .data import dataset_info
    from .models import DigitsEpsMLP, unet_from_flags
    from .purifier import OneShotPurifier
    from .schedules import schedule_from_flags
    from .training import digits_eps_kwargs

    spec = config["diffusion"]
    if spec.get("train"):  # trained by the pipeline: the digits eps-model
        channels = dataset_info(config["dataset"]["name"])[0][0]
        eps_model = DigitsEpsMLP(**digits_eps_kwargs(channels=channels, **spec["train"]))
    else:
        # Built on the meta device and filled on the target device: a random init of the 552M-parameter
        # ImageNet UNet on the host takes minutes. The UNet has no buffers to initialise.
        with torch.device("meta"):
            eps_model = unet_from_flags(spec["flags"])
        eps_model = eps_model.to_empty(device=device)
        with torch.no_grad():
            for p in eps_model.parameters():
                p.normal_(0.0, 0.02)
    return OneShotPurifier(speed_settings(eps_model, device, **Settings.of(config).speed),
                           schedule_from_flags(spec["flags"]), sigma)


def random_classifier(config: dict, arch: str, normalization, device):
    from .certify import speed_settings
    from .config import Settings
    from .models import classifier

    return speed_settings(classifier(arch, config["dataset"]["name"], normalization), device,
                          **Settings.of(config).speed)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def samples_per_second(forward, x, min_seconds: float, min_batches: int = 3) -> tuple[float, int, float]:
    """Forwards of batch x until min_seconds and min_batches have passed, after two warm-up batches
    (torch.compile, cudnn autotuning under cudnn.benchmark, allocator). Returns (samples/s, batches, seconds)."""
    import torch

    with torch.inference_mode():
        return _timed(forward, x, min_seconds, min_batches)


def _timed(forward, x, min_seconds: float, min_batches: int) -> tuple[float, int, float]:
    device = x.device
    forward(x)
    forward(x)
    _sync(device)
    batches, t0 = 0, time.perf_counter()
    while True:
        forward(x)
        batches += 1
        if batches >= min_batches:
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return batches * x.shape[0] / elapsed, batches, elapsed


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"


def classifier_batch(batch_size: int, m: int) -> int:
    """Samples per classifier forward in certification: the batch times the local draws folded together."""
    from .smoothing import FOLD_FACTOR

    return batch_size * max(1, min(m, FOLD_FACTOR))


def new_record(config: dict, device) -> dict:
    """An empty throughput record for this config's settings on `device` (rates filled in by the caller)."""
    import torch

    return {"format": FORMAT, **settings(config), "experiment": config["experiment"],
            "device": device_name(torch.device(device)), "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "purifier": None, "classifier_arch": {}, "timing": {}}


def measure(config: dict, cells, device, min_seconds: float = 10.0, log=sys.stderr) -> dict:
    """Time the purifier (if these cells use one) and each classifier architecture; a throughput record."""
    import torch

    from .data import dataset_info

    device = torch.device(device)
    shape = dataset_info(config["dataset"]["name"])[0]
    batch = config["certify"]["batch_size"]
    x = torch.rand(batch, *shape, device=device)
    # the classifier batch of the certifier: local draws folded, up to FOLD_FACTOR draws per forward
    x_clf = torch.rand(classifier_batch(batch, max(c.m for c in cells)), *shape, device=device)
    record = new_record(config, device)
    if any(c.uses_diffusion for c in cells):
        purifier = random_purifier(config, device, cells[0].sigma)
        rate, batches, seconds = samples_per_second(purifier, x, min_seconds)
        record["purifier"] = rate
        record["timing"]["purifier"] = {"batches": batches, "seconds": round(seconds, 3)}
        print(f"purifier {config['diffusion']['name']}: {rate:,.1f} samples/s", file=log)
        del purifier
    for arch, normalization in classifier_archs(config, cells).items():
        model = random_classifier(config, arch, normalization, device)
        rate, batches, seconds = samples_per_second(model, x_clf, min_seconds)
        record["classifier_arch"][arch] = rate
        record["timing"][arch] = {"batches": batches, "seconds": round(seconds, 3)}
        print(f"classifier {arch}: {rate:,.1f} samples/s", file=log)
        del model
    return record


def read_record(path, config: dict) -> dict:
    """A throughput record, checked: readable, this format, positive rates, measured with these settings."""
    path = Path(path)
    fix = f"rerun `diffsmooth throughput --configfile <your config>` to measure again (it writes {FILENAME})"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ThroughputError(f"throughput file {path} does not exist: {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThroughputError(f"throughput file {path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ThroughputError(f"{path} is not a throughput record (format {FORMAT!r} expected): {fix}")
    rates = [record.get("purifier")] + list((record.get("classifier_arch") or {}).values())
    if not all(r is None or (isinstance(r, (int, float)) and r > 0) for r in rates):
        raise ThroughputError(f"{path}: samples/s must be positive numbers, got {rates}: {fix}")
    wanted = settings(config)
    differ = [f"{k}: measured {record.get(k)!r}, config {v!r}" for k, v in wanted.items() if record.get(k) != v]
    if differ:
        raise ThroughputError(f"{path} was measured with other settings than the config's ({'; '.join(differ)}): {fix}")
    return record
