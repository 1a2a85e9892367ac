"""Stand-ins: random-weight files in the exact containers of the user-supplied inputs a config expects.

A cluster admin checks the whole setup (SLURM, paths, loaders, tables) before downloading 15 GB; the
tests run the paper configs end to end on them. Every stand-in has the real file's container, key
names, shapes and dtypes (tests/data/models/ manifests); only the values are random (fixed seed).

  CIFAR-10 test_batch   Python 2 cPickle, protocol 2: byte-string keys b'batch_label', b'labels', b'data',
                        b'filenames'; a uint8 [n, 3072] array under numpy 1.x's pickle names
  Cohen / SmoothAdv     torch.save({'epoch', 'arch', 'state_dict', 'optimizer'}) in the legacy (pre-1.6,
                        non-zip) serialization, SGD momentum buffers, BatchNorm num_batches_tracked
  DiffSmooth BEiT-L     torch.save({'epoch', 'arch', 'state_dict'}) (zip), with timm 0.9's persistent
                        relative_position_index buffers
  OpenAI UNets          a bare state_dict (zip), from the config's diffusion flags
  ImageNet val          <root>/val/<wnid>/ILSVRC2012_val_########.JPEG for the 1000 wnids, odd sizes,
                        one grayscale and one CMYK JPEG (as in the real validation set)

Every tensor is tagged as saved from `cuda:0`, as the released files are, so a loader that forgets
`map_location` fails here as it would on a CPU node with the real files.
Existing files are never overwritten unless `force` (they may be a user's real checkpoints).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SAVED_FROM = "cuda:0"  # the device tag of the released checkpoints' tensors
MARKER = "STANDIN.txt"  # in a stand-in ImageNet folder: tells --force that the folder is ours to replace
# Training facts written into the classifier containers (Cohen et al. train.py: 90 epochs, StepLR(30, 0.1)
# from lr 0.1, SGD momentum 0.9, weight decay 1e-4, batch 400).
EPOCHS, BATCH, TRAIN_IMAGES = 90, 400, {"cifar10": 50_000, "imagenet": 1_281_167, "imagenet32": 1_281_167}
TIMM_09_PERSISTENT = ("relative_position_index",)  # buffers timm 0.9.x (DiffSmooth's pin) saved, 1.x does not


class StandInError(ValueError):
    """A stand-in cannot be written (unknown architecture, a folder that is not ours, ...)."""


@dataclass(frozen=True)
class StandIn:
    """One file (or the ImageNet folder) a config expects from the user."""

    path: Path
    kind: str  # cifar10_test_batch | imagenet_val | classifier | diffusion
    name: str  # the config's name for it: classifier key, "diffusion", or the dataset name
    container: str  # what is written, in words


def expected(config: dict, out_root=".") -> list[StandIn]:
    """What the config's grid reads from the user: the dataset and every checkpoint without a `train:` block
    that a cell uses (the files check_user_inputs of workflow/rules/tables.smk requires)."""
    from .grid import build_grid

    root = Path(out_root)
    grid = build_grid(config)
    out = []
    dataset = config["dataset"]
    if dataset["name"] == "cifar10":
        out.append(StandIn(root / dataset["root"] / "cifar-10-batches-py" / "test_batch", "cifar10_test_batch",
                           "cifar10", "Python 2 cPickle batch, protocol 2"))
    elif dataset["name"] == "imagenet":
        out.append(StandIn(root / dataset["root"] / "val", "imagenet_val", "imagenet",
                           "1000 wnid folders of .JPEG files (valprep layout)"))
    for name in sorted({c.classifier for c in grid.cells}):
        spec = config["classifiers"][name]
        if not spec.get("train"):
            legacy = spec["arch"] in _TRAIN_PY_ARCHS
            out.append(StandIn(root / spec["checkpoint"], "classifier", name,
                               f"{spec['arch']} checkpoint dict" + (", legacy torch.save" if legacy else "")))
    spec = config["diffusion"]
    if any(c.uses_diffusion for c in grid.cells) and not spec.get("train"):
        out.append(StandIn(root / spec["checkpoint"], "diffusion", "diffusion", "bare UNet state_dict"))
    return out


def write_stand_ins(config: dict, out_root=".", force: bool = False, seed: int = 0, cifar_images: int = 10_000,
                    images_per_class: int = 50, log: Callable[[str], None] = print) -> list[tuple[StandIn, str]]:
    """Write every expected stand-in; returns [(stand-in, "written" | "exists")], logging one line each."""
    if cifar_images < 1 or images_per_class < 1:
        raise StandInError(f"--cifar-images and --images-per-class must be >= 1 (got {cifar_images}, "
                           f"{images_per_class})")
    done = []
    for item in expected(config, out_root):
        if present(item) and not force:
            log(f"kept      {item.path} (exists; --force replaces it)")
            done.append((item, "exists"))
            continue
        item_seed = _seed(seed, item.name)
        if item.kind == "cifar10_test_batch":
            write_cifar10_test_batch(item.path, cifar_images, item_seed, force=force)
        elif item.kind == "imagenet_val":
            write_imagenet_val(item.path, images_per_class, item_seed, force=force)
        elif item.kind == "classifier":
            spec = config["classifiers"][item.name]
            write_classifier(item.path, spec["arch"], config["dataset"]["name"], spec.get("normalization"),
                             item_seed, force=force)
        else:
            write_diffusion(item.path, config["diffusion"]["flags"], item_seed, force=force)
        log(f"written   {item.path} ({item.container}; random values, seed {item_seed})")
        done.append((item, "written"))
    return done


def present(item: StandIn) -> bool:
    """Whether the file a stand-in would write (or what the loader would read instead) exists already."""
    if item.kind == "cifar10_test_batch":  # the loader also reads <root>/test_batch
        return item.path.exists() or (item.path.parent.parent / "test_batch").exists()
    if item.kind == "imagenet_val":  # the loader also reads class folders directly under the root
        return item.path.exists() or any(p.is_dir() for p in item.path.parent.glob("n*"))
    return item.path.exists()


def _seed(seed: int, name: str) -> int:
    """A distinct, stable seed per file, so the stand-in classifiers are different networks."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


# ---------------------------------------------------------------------------------------------------
# Writing files atomically, never over an existing one unless forced

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_path(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it becomes `path` (os.replace when forced, else a
    hard link that fails if `path` appeared meanwhile). The mode follows the umask, as for any new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise StandInError(f"{path} appeared while its stand-in was written; it was left as it is") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------------
# CIFAR-10: the python version's test_batch, as Python 2's cPickle wrote it

class _Py2Global:
    """A module-level name as a Python 2 pickle spells it (numpy 1.x: numpy.core.multiarray._reconstruct)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle requires a callable reduce function; this one is only ever written
        raise TypeError(f"{self.module}.{self.name} is a name for Python 2 pickles, not a function")


_RECONSTRUCT = _Py2Global("numpy.core.multiarray", "_reconstruct")
_NDARRAY, _DTYPE = _Py2Global("numpy", "ndarray"), _Py2Global("numpy", "dtype")


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its opcodes can be overridden
    """Protocol 2 as Python 2 wrote it. Python 3 writes `bytes` at protocol 2 as `_codecs.encode(str, 'latin1')`
    calls, which load as bytes whatever the encoding; Python 2's `str` was a STRING opcode, which
    pickle.load decodes with `encoding` (str keys under 'latin1', bytes under 'bytes'). numpy objects are
    written with their numpy 1.x reduce tuples, independent of the installed numpy's internals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def _save_py2_global(self, obj: _Py2Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    def memoize(self, obj) -> None:
        # cPickle.c numbered its memo from 1 ("Make sure memo keys are positive!"), pickle.py from 0
        if id(obj) not in self.memo:
            index = len(self.memo) + 1
            self.write(self.put(index))
            self.memo[id(obj)] = index, obj

    dispatch[bytes] = _save_py2_str
    dispatch[_Py2Global] = _save_py2_global

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            if obj.dtype != np.uint8 or obj.ndim != 2:
                raise TypeError("only the uint8 [n, 3072] CIFAR array is written in Python 2 form")
            # numpy 1.x ndarray.__reduce__: _reconstruct(ndarray, (0,), 'b') + (version, shape, dtype, fortran, raw)
            return _RECONSTRUCT, (_NDARRAY, (0,), b"b"), (1, obj.shape, np.dtype(np.uint8), False,
                                                         np.ascontiguousarray(obj).tobytes())
        if isinstance(obj, np.dtype):
            return _DTYPE, (b"u1", 0, 1), (3, b"|", None, None, None, -1, -1, 0)
        return NotImplemented


def cifar10_test_batch(n_images: int, seed: int) -> dict:
    """The batch dict with the real keys (in the real file's order); random pixels, balanced labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % 10)
    return {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(y) for y in labels],
        b"data": rng.integers(0, 256, size=(n_images, 3 * 32 * 32), dtype=np.uint8),  # rows: R plane, G, B
        b"filenames": [f"standin_{CIFAR10_CLASSES[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)],
    }


def write_cifar10_test_batch(path, n_images: int = 10_000, seed: int = 0, force: bool = False) -> Path:
    path = Path(path)
    batch = cifar10_test_batch(n_images, seed)
    with _atomic_path(path, force) as tmp, open(tmp, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(batch)
    return path


# ---------------------------------------------------------------------------------------------------
# Checkpoints

# Architectures whose released files come from Cohen et al.'s / SmoothAdv's train.py (PyTorch 1.0/1.1, 2019).
_TRAIN_PY_ARCHS = {"cifar_resnet20", "cifar_resnet110", "imagenet32_resnet110", "resnet50"}
_SAVING_FROM: contextvars.ContextVar[str | None] = contextvars.ContextVar("standin_saving_from", default=None)
_TAGGER_REGISTERED = False


def _device_tagger(storage) -> str | None:
    return _SAVING_FROM.get()  # None outside saved_from(): torch's own taggers decide


def _no_deserializer(storage, location):
    return None  # loading is left to torch's own deserializers (map_location decides)


@contextlib.contextmanager
def saved_from(device: str = SAVED_FROM) -> Iterator[None]:
    """Within this block torch.save records every storage's location as `device` (e.g. 'cuda:0') although
    the tensors are on the CPU, via torch.serialization.register_package (registered once, inert outside)."""
    global _TAGGER_REGISTERED
    import torch

    if not _TAGGER_REGISTERED:
        torch.serialization.register_package(5, _device_tagger, _no_deserializer)  # before 'cpu' (priority 10)
        _TAGGER_REGISTERED = True
    token = _SAVING_FROM.set(device)
    try:
        yield
    finally:
        _SAVING_FROM.reset(token)


def _save(obj, path: Path, legacy: bool, force: bool) -> None:
    import torch

    with _atomic_path(path, force) as tmp, saved_from():
        torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)


@contextlib.contextmanager
def _seeded(seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def classifier_state_dict(arch: str, dataset: str, normalization: str | None, seed: int) -> "OrderedDict":
    """The classifier's state_dict as the released file holds it (library init under `seed`)."""
    from .models import classifier

    with _seeded(seed):
        model = classifier(arch, dataset, normalization)
    state = model.state_dict()
    if arch.startswith("beit"):
        state = _with_timm09_buffers(model, state)
    return state


def _with_timm09_buffers(model, state) -> "OrderedDict":
    """Insert the buffers timm 0.9 kept persistent, where its state_dict had them (after the bias table)."""
    extra = {}
    for prefix, module in model.named_modules():
        for name in TIMM_09_PERSISTENT:
            if getattr(module, name, None) is not None and name in getattr(module, "_non_persistent_buffers_set", ()):
                extra[f"{prefix}.relative_position_bias_table"] = (f"{prefix}.{name}", module._buffers[name])
    out = OrderedDict()
    for key, value in state.items():
        out[key] = value
        if key in extra:
            out[extra[key][0]] = extra[key][1].clone()
    return out


def write_classifier(path, arch: str, dataset: str, normalization: str | None = None, seed: int = 0,
                     force: bool = False) -> Path:
    """Cohen / SmoothAdv train.py container (legacy serialization, SGD state) or DiffSmooth's BEiT dict."""
    from .models.zoo import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise StandInError(f"no stand-in for architecture {arch!r}: use one of {sorted(ARCHITECTURES)}")
    path = Path(path)
    state = classifier_state_dict(arch, dataset, normalization, seed)
    if arch not in _TRAIN_PY_ARCHS:
        # DiffSmooth released no training code for its BEiT: certify.py reads only 'arch' and 'state_dict'.
        _save({"epoch": EPOCHS, "arch": arch, "state_dict": state}, path, legacy=False, force=force)
        return path
    steps = EPOCHS * math.ceil(TRAIN_IMAGES.get(dataset, 50_000) / BATCH)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            value.fill_(steps)
    _save({"epoch": EPOCHS, "arch": arch, "state_dict": state, "optimizer": _sgd_state(state, seed)}, path,
          legacy=True, force=force)
    return path


def _sgd_state(state, seed: int) -> dict:
    """torch.optim.SGD's state_dict after training: a momentum buffer per parameter, lr after two StepLR decays."""
    import torch

    params = [torch.nn.Parameter(v.detach().clone()) for k, v in state.items() if v.is_floating_point()
              and not k.endswith(("running_mean", "running_var", "relative_position_index"))]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        optimizer.state[p]["momentum_buffer"] = 1e-3 * torch.randn(p.shape, generator=generator)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = 0.1, 0.1 * 0.1 ** ((EPOCHS - 1) // 30)
    return optimizer.state_dict()


def write_diffusion(path, flags: dict, seed: int = 0, force: bool = False) -> Path:
    """The OpenAI UNet the flags describe, as a bare state_dict (how improved/guided-diffusion release them)."""
    from .models.unet import unet_from_flags

    path = Path(path)
    try:
        with _seeded(seed):
            model = unet_from_flags(flags)
    except (ValueError, TypeError) as e:
        raise StandInError(f"cannot build the UNet from the config's diffusion flags: {e}") from None
    _save(model.state_dict(), path, legacy=False, force=force)
    return path


# ---------------------------------------------------------------------------------------------------
# ImageNet validation folder

def write_imagenet_val(path, images_per_class: int = 50, seed: int = 0, force: bool = False) -> Path:
    """<path>/<wnid>/ILSVRC2012_val_<n>.JPEG for the 1000 ImageNet-1k wnids (timm's list), built in a sibling
    folder and renamed into place. Sizes vary (odd, portrait and landscape, some below 256 px); the first
    image of class 0 is grayscale and the first of class 1 CMYK, as such files exist in the real set."""
    from timm.data import ImageNetInfo

    path = Path(path)
    if path.exists():
        if not force:
            raise StandInError(f"{path} exists: it was left as it is (--force replaces a stand-in folder)")
        if not (path / MARKER).exists():
            raise StandInError(f"{path} exists and was not written by `diffsmooth stand-in` (no {MARKER}): "
                               "move it away yourself if it is to be replaced")
    if not path.exists() and any(p.is_dir() for p in path.parent.glob("n*")):
        raise StandInError(f"{path.parent} holds class folders itself, which a stand-in {path.name}/ would shadow "
                           "(the loader prefers val/): move them away yourself if they are to be replaced")
    wnids = ImageNetInfo("imagenet-1k").label_names()
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(len(wnids) * images_per_class) + 1  # val file numbers spread over the classes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        for k, wnid in enumerate(wnids):
            folder = tmp / wnid
            folder.mkdir()
            for j, number in enumerate(sorted(numbers[k * images_per_class:(k + 1) * images_per_class])):
                mode = "L" if (k, j) == (0, 0) else "CMYK" if (k, j) == (1, 0) else "RGB"
                _random_image(rng, mode).save(folder / f"ILSVRC2012_val_{number:08d}.JPEG", quality=75)
        (tmp / MARKER).write_text("Random stand-in images written by `diffsmooth stand-in` (not ImageNet).\n")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists():  # forced, and ours (checked above)
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _random_image(rng: np.random.Generator, mode: str):
    """Smooth random content (a coarse grid upsampled), so the JPEGs stay small; sides 150..520 px."""
    from PIL import Image

    width, height = (int(s) for s in rng.integers(150, 521, size=2))
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return image.convert(mode)


# ---------------------------------------------------------------------------------------------------
# `diffsmooth stand-in`
