"""Classifier zoo: the paper's base classifiers as `Sequential(normalisation layer, network)`.

The normalisation layer is module 0 of the model (as in Cohen et al., SmoothAdv and DiffSmooth), so
Gaussian noise is added and radii are measured in [0,1] pixel space. It has no state_dict keys, so
every checkpoint key starts with `1.` (`1.module.` for the DataParallel-wrapped ImageNet ResNet-50).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .digits import digits_mlp
from .layers import normalization_layer
from .resnet_cifar import CifarResNet
from .unet import AttentionBlock

# Which statistics a dataset's normalisation layer uses. SmoothAdv normalises ImageNet32 with the
# CIFAR-10 mean/std (its datasets.get_normalize_layer).
DATASET_STATS = {"cifar10": "cifar10", "imagenet": "imagenet", "imagenet32": "cifar10", "digits": "digits"}
NORMALIZATIONS = ("normalize", "input_center", "vit")


class DataParallelLayout(nn.Module):
    """Holds the network as `.module`, giving the `module.*` keys of a torch.nn.DataParallel checkpoint
    without DataParallel's device scattering."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _timm_model(name: str, **kwargs) -> nn.Module:
    import timm  # imported lazily: only the ImageNet classifiers need it

    return timm.create_model(name, pretrained=False, **kwargs)


@dataclass(frozen=True)
class Architecture:
    """A registry entry; calling it builds the bare network (module 1 of the classifier)."""

    name: str
    build: Callable[..., nn.Module]
    datasets: tuple[str, ...]
    num_classes: int
    default_normalization: str  # used when classifier(normalization=None)
    description: str

    def __call__(self, **kwargs) -> nn.Module:
        return self.build(**kwargs)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("cifar_resnet20", lambda: CifarResNet(20, 10), ("cifar10",), 10, "normalize",
                     "Cohen et al. CIFAR ResNet-20 (BasicBlock)"),
        Architecture("cifar_resnet110", lambda: CifarResNet(110, 10), ("cifar10",), 10, "normalize",
                     "Cohen et al. / SmoothAdv CIFAR ResNet-110 (BasicBlock)"),
        Architecture("imagenet32_resnet110", lambda: CifarResNet(110, 1000), ("imagenet32",), 1000, "normalize",
                     "SmoothAdv ResNet-110 for 32x32 downsampled ImageNet"),
        Architecture("resnet50", lambda: DataParallelLayout(_timm_model("resnet50")), ("imagenet",), 1000,
                     "normalize", "torchvision-layout ResNet-50 inside DataParallel (keys 1.module.*)"),
        Architecture("beit_large_patch16_224", lambda: _timm_model("beit_large_patch16_224"), ("imagenet",), 1000,
                     "vit", "DiffSmooth's timm BEiT-L/16 at 224x224, inputs normalised to [-1, 1]"),
        Architecture("digits_mlp", lambda width=256: digits_mlp(width=width, num_classes=10)[1], ("digits",), 10,
                     "normalize", "MLP for the embedded sklearn-digits default (8x8x1)"),
    )
}


def resolve_normalization(name: str, dataset: str, normalization: str | None = None) -> tuple[str, str]:
    """(layer kind, statistics) for an architecture/dataset pair: ('normalize', 'cifar10'), ('vit', 'vit'), ..."""
    arch = _architecture(name)
    if dataset not in arch.datasets:
        raise ValueError(f"architecture {name!r} is for dataset(s) {list(arch.datasets)}, not {dataset!r}")
    kind = arch.default_normalization if normalization is None else normalization
    if kind not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}: use None (the architecture's default) "
                         f"or one of {list(NORMALIZATIONS)}")
    return kind, ("vit" if kind == "vit" else DATASET_STATS[dataset])


def _architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: use one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def classifier(name: str, dataset: str, normalization: str | None = None, **arch_kwargs) -> nn.Sequential:
    """Sequential(normalisation layer, network) with random weights, in the reference checkpoint layout.

    normalization: None (the architecture's default: dataset mean/std, or 0.5/0.5 for BEiT),
    'normalize' ((x - mean) / std), 'input_center' (x - mean, SmoothAdv) or 'vit' (2x - 1).
    """
    if dataset not in DATASET_STATS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {sorted(DATASET_STATS)}")
    kind, stats = resolve_normalization(name, dataset, normalization)
    layer = normalization_layer("normalize" if kind == "vit" else kind, stats)
    return nn.Sequential(layer, _architecture(name)(**arch_kwargs))


PRECISIONS = ("fp32", "tf32", "bf16")


def apply_precision(precision: str, device: str | torch.device = "cpu") -> None:
    """Set torch's process-wide float32 arithmetic for `precision` (the settings are global in torch).

    fp32: strict IEEE float32 (TF32 off for matmuls and cuDNN convolutions, matmul precision "highest").
    tf32: TF32 tensor cores for float32 matmuls and convolutions (10-bit mantissa products, fp32 sums).
    bf16: like fp32 for whatever runs in float32; the models run under bf16 autocast (InferenceModel).
    On CUDA, cudnn.benchmark is switched on: certification runs fixed batch shapes, so autotuning pays.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {list(PRECISIONS)} (`certify.precision`)")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


class InferenceModel(nn.Module):
    """Runs the wrapped model under autocast and/or with channels-last inputs; returns float32."""

    def __init__(self, module: nn.Module, device_type: str, autocast_dtype: torch.dtype | None, channels_last: bool):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        context = (torch.autocast(self.device_type, dtype=self.autocast_dtype)
                   if self.autocast_dtype is not None else nullcontext())
        with context:
            out = self.module(x, *args, **kwargs)
        return out.float()


class CompiledModel(nn.Module):
    """torch.compile of a module with an eager fallback: if compiling (or running the compiled graph)
    raises, a RuntimeWarning names the error and this and every later call run the module eagerly."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        self.failed: str | None = None

    def forward(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back, named in the warning
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                warnings.warn(f"torch.compile failed ({self.failed[:300]}); running this model eagerly "
                              "(`certify.compile: false` avoids the attempt)", RuntimeWarning, stacklevel=2)
        return self.module(*args, **kwargs)


def prepare_for_inference(model: nn.Module, device: str | torch.device = "cpu", channels_last: bool = False,
                          precision: str = "fp32", sdpa: bool = False, compile: bool = False,
                          fold_batchnorm: bool = False) -> nn.Module:
    """eval(), no grad, moved to `device`; the arithmetic of `precision` (apply_precision) and optional
    speed-ups, all off by default: channels_last memory format; fused SDPA attention in the UNet;
    BatchNorm folded into the preceding convolutions of the CIFAR ResNets (eval-mode statistics);
    torch.compile with an eager fallback (CompiledModel). Under bf16, GroupNorm statistics and the
    einsum-attention softmax stay float32. Returns the model itself when nothing wraps it, otherwise a
    wrapper (its state_dict keys gain a `module.` prefix, so load checkpoints before calling this)."""
    device = torch.device(device)
    apply_precision(precision, device)
    model.eval().requires_grad_(False).to(device)
    if fold_batchnorm:
        for module in model.modules():
            if isinstance(module, CifarResNet):
                module.fold_batchnorm()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.use_sdpa = sdpa
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    if channels_last or autocast_dtype is not None:
        model = InferenceModel(model, device.type, autocast_dtype, channels_last).eval()
    return CompiledModel(model).eval() if compile else model
