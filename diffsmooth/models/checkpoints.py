"""Strict, explained loading of user-supplied checkpoints (classifiers and diffusion models).

Accepted containers:
  * Cohen / SmoothAdv / DiffSmooth checkpoint dicts `{'arch', 'state_dict', ('epoch', 'optimizer', 'kwargs')}`;
  * bare state_dicts (the OpenAI UNet files; a classifier then needs `arch=`), `.pt`/`.pth(.tar)` or `.safetensors`;
  * `{'arch': 'digits_eps_mlp', 'state_dict', 'kwargs'}` for the digits eps-model,
    `{'arch': 'unet', 'state_dict', 'flags'}` for a UNet that carries its flags.

Loading is strict. The only tolerated differences are harmless ones: a DataParallel `module.` prefix
(at the start of the keys or after `1.`, or missing where the layout expects `1.module.`), entries for
buffers we keep non-persistent when their values equal ours (normalisation statistics, BEiT's
relative_position_index), and BatchNorm `num_batches_tracked` counters absent from old files.
Anything else raises CheckpointError saying what differs and what probably caused it.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..rows import sha256_file  # noqa: F401  (re-exported: part of this module's API)
from .digits import DigitsEpsMLP
from .layers import InputCenterLayer, NormalizeLayer
from .unet import diffusion_settings_from_flags, unet_from_flags, unet_kwargs_from_flags
from .zoo import ARCHITECTURES, classifier, resolve_normalization

SHOW = 5  # how many offending keys an error message lists
SUPPLY_HINT = ("The paper's checkpoints are not distributed with this project: download them and place them "
               "under data/checkpoints/ (see the README), or pass the correct path.")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not match the architecture it is loaded into."""


# ---------------------------------------------------------------------------------------------------
# Reading files

def _read_file(path: Path, map_location, trust_pickle: bool):
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}. {SUPPLY_HINT}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
        try:
            return load_file(str(path), device=device)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"could not read {path} as safetensors ({e}); the file is truncated or "
                                  f"corrupt: fetch it again and compare its sha256") from e
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"could not unpickle {path} ({e}); the file is truncated or corrupt") from e
        if not trust_pickle:
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and plain containers, so torch.load(weights_only=True) "
                f"refused it. If the file comes from a source you trust, set `trust_pickle: true` on this "
                f"checkpoint's entry in the config (`classifiers: <name>:` or `diffusion:`), or pass "
                f"trust_pickle=True from Python; this runs the pickled code.") from e
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # zip reader errors, EOFError, ...
        raise CheckpointError(f"could not read {path} ({type(e).__name__}: {e}); the file is truncated or "
                              f"not a PyTorch checkpoint: fetch it again and compare its sha256") from e


def _split_container(obj, path: Path) -> tuple[dict, dict]:
    """-> (state_dict, metadata such as arch/epoch/kwargs/flags)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer")}
        return dict(obj["state_dict"]), meta
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    keys = list(obj)[:SHOW] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path} is neither a checkpoint dict with a 'state_dict' entry nor a bare state_dict "
                          f"of tensors (found: {keys})")


# ---------------------------------------------------------------------------------------------------
# Matching keys

def _canonical_key(key: str) -> str:
    """Key without DataParallel `module.` segments, so `module.1.x`, `1.module.x` and `1.x` all compare equal."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("1.module."):
        key = "1." + key[len("1.module."):]
    return key


def _rename_module_prefix(state_dict: dict, expected: list[str]) -> tuple[dict, int]:
    """Map checkpoint keys onto the model's spelling of the `module.` prefix. Returns (state_dict, #renamed)."""
    if set(state_dict) == set(expected):
        return state_dict, 0
    by_canonical = {_canonical_key(k): k for k in expected}
    if len(by_canonical) != len(expected):  # ambiguous: leave keys alone
        return state_dict, 0
    renamed = {}
    for key, value in state_dict.items():
        renamed[by_canonical.get(_canonical_key(key), key)] = value
    changed = sum(1 for a, b in zip(state_dict, renamed) if a != b)
    return renamed, changed


def _non_persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    found = {}
    for prefix, module in model.named_modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            if module._buffers.get(name) is not None:
                found[f"{prefix}.{name}" if prefix else name] = module._buffers[name]
    return found


def _same_value(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Shapes may differ only by broadcasting dims, e.g. means stored as [3] vs our [1, 3, 1, 1].
    if a.numel() != b.numel():
        return False
    a, b = a.detach().cpu().flatten(), b.detach().cpu().flatten()
    if a.is_floating_point() or b.is_floating_point():
        return torch.allclose(a.double(), b.double(), rtol=1e-6, atol=1e-7)
    return torch.equal(a, b)


def _normalisation_layout_problem(model: nn.Module, state_dict: dict) -> str | None:
    """Checkpoints written with persistent normalisation buffers reveal their layer: `0.means` + `0.sds`
    is a NormalizeLayer, `0.means` alone an InputCenterLayer. Compare with module 0 of the model."""
    if not isinstance(model, nn.Sequential) or not any(k.startswith("0.") for k in state_dict):
        return None
    layer = model[0]
    has_sds = "0.sds" in state_dict
    has_means = "0.means" in state_dict
    if has_sds and not isinstance(layer, NormalizeLayer):
        return (f"wrong normalisation layer: the checkpoint stores 0.means and 0.sds (a NormalizeLayer, "
                f"(x - mean) / std) but the model was built with {type(layer).__name__}; "
                f"pass normalization='normalize' (or 'vit' for a 0.5/0.5 model)")
    if has_means and not has_sds and isinstance(layer, NormalizeLayer):
        return ("wrong normalisation layer: the checkpoint stores 0.means without 0.sds (an InputCenterLayer, "
                "x - mean, as in most SmoothAdv models) but the model was built with NormalizeLayer; "
                "pass normalization='input_center'")
    if (has_means or has_sds) and not isinstance(layer, (NormalizeLayer, InputCenterLayer)):
        return f"the checkpoint stores normalisation buffers but module 0 of the model is {type(layer).__name__}"
    return None


def _check_and_load(model: nn.Module, state_dict: dict, path: Path, what: str, hint_fn, assign: bool = False) -> dict:
    """Strictly load `state_dict` into `model` after the tolerated fixes; raise CheckpointError otherwise.
    Returns notes on the fixes applied (for the info dict)."""
    expected_sd = model.state_dict(keep_vars=True)
    expected = list(expected_sd)
    non_persistent = _non_persistent_buffers(model)
    state_dict, renamed = _rename_module_prefix(state_dict, expected + [k for k in non_persistent if k not in expected_sd])
    notes: dict = {"renamed_module_prefix": renamed}

    layout_problem = _normalisation_layout_problem(model, state_dict)
    if layout_problem:
        raise CheckpointError(f"checkpoint {path} does not match {what}: {layout_problem}.")

    # Entries for buffers we keep out of the state_dict: accept when equal to ours, then drop.
    dropped, conflicts = [], []
    for key in [k for k in state_dict if k in non_persistent and k not in expected_sd]:
        if non_persistent[key].is_meta or _same_value(state_dict[key], non_persistent[key]):
            dropped.append(key)
            del state_dict[key]
        else:
            conflicts.append(key)
    if conflicts:
        shown = ", ".join(f"{k} = {state_dict[k].flatten()[:6].tolist()} vs ours "
                          f"{non_persistent[k].flatten()[:6].tolist()}" for k in conflicts[:SHOW])
        raise CheckpointError(f"checkpoint {path} does not match {what}: it stores buffer values that differ from the "
                              f"model's ({shown}); for normalisation statistics this means the wrong dataset or "
                              f"normalisation layer.")
    notes["dropped_non_persistent"] = len(dropped)

    missing = [k for k in expected if k not in state_dict]
    # Old (PyTorch < 0.4.1) files lack BatchNorm counters; they do not affect eval-mode outputs.
    untracked = [k for k in missing if k.endswith("num_batches_tracked")]
    if untracked and len(untracked) == len(missing):
        missing = []
        for key in untracked:
            state_dict[key] = torch.zeros((), dtype=torch.long)
    notes["filled_num_batches_tracked"] = len(untracked) if not missing else 0
    unexpected = [k for k in state_dict if k not in expected_sd]
    wrong_shape = [k for k in expected if k in state_dict and state_dict[k].shape != expected_sd[k].shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            _mismatch_message(path, what, expected_sd, state_dict, missing, unexpected, wrong_shape, hint_fn))
    if assign:
        # The model was built on the meta device: adopt the checkpoint tensors in the model's dtype.
        state_dict = {k: v.to(expected_sd[k].dtype) for k, v in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as e:  # should not happen after the checks above
        raise CheckpointError(f"checkpoint {path} does not load into {what}: {e}") from e
    return notes


def _mismatch_message(path, what, expected_sd, state_dict, missing, unexpected, wrong_shape, hint_fn) -> str:
    lines = [f"checkpoint {path} does not match {what} (strict loading): {len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(wrong_shape)} with a different shape "
             f"(checkpoint has {len(state_dict)} tensors, model expects {len(expected_sd)})."]
    if missing:
        lines.append(f"  missing (first {SHOW}): {', '.join(missing[:SHOW])}")
    if unexpected:
        lines.append(f"  unexpected (first {SHOW}): {', '.join(unexpected[:SHOW])}")
    if wrong_shape:
        lines.append(f"  different shape (first {SHOW}): " + ", ".join(
            f"{k} checkpoint {list(state_dict[k].shape)} vs model {list(expected_sd[k].shape)}" for k in wrong_shape[:SHOW]))
    lines.append("Likely cause: " + _likely_cause(expected_sd, state_dict, missing, unexpected, wrong_shape, hint_fn))
    return "\n".join(lines)


def _likely_cause(expected_sd, state_dict, missing, unexpected, wrong_shape, hint_fn) -> str:
    expected = list(expected_sd)
    if missing and not unexpected and not wrong_shape and set(state_dict) == set(expected[:len(state_dict)]):
        return (f"a truncated or partial state_dict: the checkpoint holds only the first {len(state_dict)} of the "
                f"{len(expected)} tensors the model needs (an incomplete download or save).")
    if any(k.startswith("0.") for k in unexpected):
        return ("wrong normalisation layer: the checkpoint has parameters in module 0 (the normalisation layer), "
                "which the reference NormalizeLayer/InputCenterLayer never have.")
    if expected and all(k.startswith("1.") for k in expected) and not any(k.startswith(("0.", "1.")) for k in state_dict):
        return ("the checkpoint keys lack the '1.' prefix of Sequential(normalisation layer, network): it holds a bare "
                "network. Wrap it the reference way before saving, or prefix its keys with '1.'.")
    specific = hint_fn(expected_sd, state_dict, missing, unexpected, wrong_shape)
    if specific:
        return specific
    if missing and not unexpected and not wrong_shape:
        return (f"the checkpoint holds a subset ({len(state_dict)} of {len(expected)}) of the model's tensors: a smaller "
                f"network of the same family (e.g. cifar_resnet20 vs cifar_resnet110), or a partially saved file.")
    if wrong_shape and not missing and not unexpected:
        return "same layout but different sizes: wrong architecture size or flags (width, number of classes)."
    return "wrong architecture: the key names differ from the chosen architecture's layout."


def _classifier_hint(expected_sd, state_dict, missing, unexpected, wrong_shape) -> str | None:
    if wrong_shape and not missing and not unexpected and all(k.rsplit(".", 2)[-2] in ("fc", "head") for k in wrong_shape):
        return "wrong number of classes for this dataset (only the final layer's shape differs)."
    return None


def _unet_hint(expected_sd, state_dict, missing, unexpected, wrong_shape) -> str | None:
    if "time_embed.0.weight" in wrong_shape:
        return "wrong flags: num_channels differs from the checkpoint's (see time_embed.0.weight)."
    ckpt_op = any(k.endswith(".op.weight") for k in state_dict)
    model_op = any(k.endswith(".op.weight") for k in expected_sd)
    if ckpt_op != model_op:
        how = "conv Downsample/Upsample (resblock_updown=False)" if ckpt_op else "ResBlocks (resblock_updown=True)"
        return f"wrong flags: the checkpoint resamples with {how}, the flags say resblock_updown={not model_op}."
    if set(wrong_shape) == {"out.2.weight", "out.2.bias"} and not missing and not unexpected:
        return "wrong flags: the output channels differ (learn_sigma True gives 6, False gives 3)."
    if missing and not unexpected and not wrong_shape and set(state_dict) < set(expected_sd):
        return None  # generic subset / truncation message
    return ("wrong flags: check num_channels, num_res_blocks, channel_mult/image_size, attention_resolutions, "
            "num_heads/num_head_channels, learn_sigma and resblock_updown against the checkpoint's README flags.")


def _count(model: nn.Module) -> tuple[int, int]:
    return len(model.state_dict()), sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------
# Public loaders

def load_classifier(path: str | Path, dataset: str, arch: str | None = None, normalization: str | None = None,
                    map_location="cpu", trust_pickle: bool = False, compute_sha256: bool = True):
    """Load a base classifier checkpoint into `Sequential(normalisation layer, network)`, strictly, in eval mode.

    arch: needed for bare state_dicts; for checkpoint dicts it must agree with the stored 'arch'.
    normalization: as in `classifier()` (None = the architecture's default); it must match how the
    checkpoint was trained (SmoothAdv's imagenet/ and most cifar10/ models need 'input_center').
    Returns (model, info) with info = path, sha256, arch, dataset, normalization, normalization_stats, ...
    """
    path = Path(path)
    state_dict, meta = _split_container(_read_file(path, map_location, trust_pickle), path)
    stored_arch = meta.get("arch")
    if arch is not None and stored_arch is not None and arch != stored_arch:
        raise CheckpointError(f"{path} stores arch={stored_arch!r} but arch={arch!r} was requested")
    arch = arch or stored_arch
    if arch is None:
        raise CheckpointError(f"{path} is a bare state_dict without an architecture: pass arch= "
                              f"(one of {sorted(ARCHITECTURES)})")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; supported: {sorted(ARCHITECTURES)}")
    try:
        kind, stats = resolve_normalization(arch, dataset, normalization)
        model = classifier(arch, dataset, normalization, **dict(meta.get("kwargs") or {}))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"cannot build the model for {path}: {e}") from e
    what = f"{arch} for {dataset} with the {kind} normalisation layer ({stats} statistics)"
    notes = _check_and_load(model, state_dict, path, what, _classifier_hint)
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    num_tensors, num_parameters = _count(model)
    info = dict(path=str(path), sha256=sha256_file(path) if compute_sha256 else None, arch=arch, dataset=dataset,
                normalization=kind, normalization_stats=stats, epoch=meta.get("epoch"),
                format="checkpoint_dict" if meta else "state_dict", num_tensors=num_tensors,
                num_parameters=num_parameters, **notes)
    return model, info


def load_diffusion(path: str | Path, flags: Mapping | None = None, map_location="cpu", trust_pickle: bool = False,
                   compute_sha256: bool = True):
    """Load a diffusion eps-model strictly, in eval mode (dropout off).

    * bare UNet state_dict (cifar10_uncond_50M_500K.pt, 256x256_diffusion_uncond.pt): `flags` required,
      a reference flag dict as in the manifests/configs;
    * `{'arch': 'unet', 'state_dict', 'flags'}`: flags read from the file unless given;
    * `{'arch': 'digits_eps_mlp', 'state_dict', 'kwargs'}`: the digits model DigitsEpsMLP(**kwargs).
    Returns (model, info) with info = path, sha256, arch, flags/kwargs, diffusion settings when known, ...
    """
    path = Path(path)
    state_dict, meta = _split_container(_read_file(path, map_location, trust_pickle), path)
    arch = meta.get("arch", "unet")
    sha = sha256_file(path) if compute_sha256 else None
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"

    if arch == "digits_eps_mlp":
        kwargs = dict(meta.get("kwargs") or {})
        try:
            model = DigitsEpsMLP(**kwargs)
        except TypeError as e:
            raise CheckpointError(f"{path}: bad DigitsEpsMLP kwargs {kwargs}: {e}") from e
        notes = _check_and_load(model, state_dict, path, f"DigitsEpsMLP({kwargs})",
                                lambda *a: "wrong kwargs (width, blocks, emb_dim, channels) for this checkpoint.")
        model.to(device).eval()
        num_tensors, num_parameters = _count(model)
        return model, dict(path=str(path), sha256=sha, arch=arch, kwargs=kwargs, num_tensors=num_tensors,
                           num_parameters=num_parameters, **notes)

    if arch != "unet":
        raise CheckpointError(f"{path}: unknown diffusion architecture {arch!r}; supported: 'unet' "
                              f"(OpenAI improved/guided-diffusion) and 'digits_eps_mlp'")
    flags = flags if flags is not None else meta.get("flags")
    if flags is None:
        raise CheckpointError(f"{path} is a bare UNet state_dict: pass the reference flags it was trained with "
                              f"(flags=..., e.g. the diffusion flags of the experiment config)")
    try:
        unet_kwargs = unet_kwargs_from_flags(flags)
        # Built on the meta device (no random init of up to 553M parameters), then the checkpoint's
        # tensors are adopted; the UNet has no buffers to initialise.
        with torch.device("meta"):
            model = unet_from_flags(flags)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"cannot build the UNet for {path} from flags: {e}") from e
    notes = _check_and_load(model, state_dict, path, "the UNet described by the flags", _unet_hint, assign=True)
    model.to(device).eval()
    try:
        settings = diffusion_settings_from_flags(flags)
    except ValueError:
        settings = None  # flags describe the network only
    num_tensors, num_parameters = _count(model)
    return model, dict(path=str(path), sha256=sha, arch="unet", flags=dict(flags), unet_kwargs=unet_kwargs,
                       diffusion=settings, num_tensors=num_tensors, num_parameters=num_parameters, **notes)
