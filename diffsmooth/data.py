"""Datasets in [0,1] pixel space: sklearn digits (embedded default), CIFAR-10 and ImageNet (user-supplied).

Each loader returns a `Dataset` whose `get(i)` gives (image C x H x W float32 in [0,1], label) by the
index the reference code uses (`certify.py --skip`), so image indices mean the same as in the paper.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = {
    # name: (image shape, number of classes)
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "imagenet": ((3, 224, 224), 1000),
}


# What each dataset's images go through before certification; part of a cell's stored identity.
PREPROCESSING = {
    "digits": "sklearn load_digits pixels / 16, float32",
    "cifar10": "ToTensor (uint8 / 255)",
    "imagenet": "RGB, Resize(256), CenterCrop(224), ToTensor",
}


def dataset_info(name: str) -> tuple[tuple[int, ...], int]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class Dataset:
    name: str
    images: object  # tensor [N, C, H, W], or a torchvision ImageFolder (ImageNet)
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for {self.name} ({len(self)} images): "
                             "check the `images` selection in the config")
        if isinstance(self.images, torch.Tensor):
            return self.images[i], int(self.labels[i])
        path = self.images.samples[i][0]  # a torchvision ImageFolder (ImageNet)
        try:
            x, _ = self.images[i]
        except (OSError, ValueError) as e:  # PIL: truncated or not an image at all
            raise ValueError(f"{path} (image {i}) is not a readable image ({type(e).__name__}: {e}): replace it "
                             "with the original file of the ImageNet validation set") from None
        return x, int(self.labels[i])


def prepare_digits(out_dir, test_size: int = 300, seed: int = 0) -> dict:
    """sklearn's digits, pixels / 16 in [0,1], fixed stratified split; writes train.npz and test.npz."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from .rows import atomic_write_bytes

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    out = Path(out_dir)
    for split, (xs, ys) in {"train": (x_tr, y_tr), "test": (x_te, y_te)}.items():
        import io
        buf = io.BytesIO()
        np.savez(buf, x=xs, y=ys)
        atomic_write_bytes(out / f"{split}.npz", buf.getvalue())
    return {"train": len(y_tr), "test": len(y_te)}


def load_dataset(name: str, root, split: str = "test") -> Dataset:
    dataset_info(name)
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset directory {root} (dataset.root of the config) for {name!r} does not exist: "
                                f"{_HOW_TO_GET[name]}, or correct dataset.root")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root} for {name!r} is not a directory: point dataset.root at the "
                                "folder that holds the data")
    if name == "digits":
        path = root / f"{split}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing (the digits {split} split under dataset.root): "
                                    f"{_HOW_TO_GET['digits']}")
        try:
            with np.load(path) as z:
                return Dataset(name, torch.from_numpy(z["x"]), z["y"])
        except Exception as e:  # truncated zip, missing arrays, not an npz at all
            raise ValueError(f"{path} is not a readable digits split ({type(e).__name__}: {e}): delete it and "
                             f"{_HOW_TO_GET['digits']}") from None
    if name == "cifar10":
        return _load_cifar10(root, split)
    return _load_imagenet(root, split)


_HOW_TO_GET = {
    "digits": ("make the split with `snakemake -c1 prepare_data --configfile <config>` (or `diffsmooth prepare-data "
               "--configfile <config>`, which writes train.npz and test.npz to dataset.root)"),
    "cifar10": "place the CIFAR-10 python batches (cifar-10-batches-py/test_batch) under data/cifar10/",
    "imagenet": "place the ImageNet validation set, one folder per class (valprep layout), under data/imagenet/val/",
}


def _load_cifar10(root: Path, split: str) -> Dataset:
    # Read by hand: torchvision.datasets.CIFAR10 refuses a folder that lacks any of the five train batches,
    # test_batch or batches.meta at their md5s (check_integrity), while the paper configs need test_batch only.
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").exists() else root
    files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for f in files:
        path = base / f
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: {_HOW_TO_GET['cifar10']}")
        xs_f, ys_f = _read_cifar10_batch(path)
        xs.append(xs_f)
        ys.append(ys_f)
    x = torch.from_numpy(np.concatenate(xs)).float() / 255.0  # ToTensor(): uint8 / 255
    return Dataset("cifar10", x, np.concatenate(ys))


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 3, 32, 32], int64 [n]) of a python-version batch (Python 2 pickle, read as torchvision does)."""
    fix = ("the file is damaged or not a CIFAR-10 python batch: fetch cifar-10-python.tar.gz again "
           f"({_HOW_TO_GET['cifar10']})")
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise ValueError(f"{path}: cannot read it as a CIFAR-10 batch ({type(e).__name__}: {e}); {fix}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: data has shape {list(data.shape)} and {len(labels)} labels, expected "
                         f"[n, 3072] and n labels; {fix}")
    if labels.size and not (0 <= labels.min() and labels.max() < 10):
        raise ValueError(f"{path}: labels outside 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_imagenet(root: Path, split: str) -> Dataset:
    from torchvision import datasets

    base = root / "val" if split == "test" and (root / "val").exists() else root
    try:  # sorted class folders, sorted files: the index order of the reference code's ImageFolder
        folder = datasets.ImageFolder(str(base), transform=_imagenet_transform())
    except FileNotFoundError as e:  # no class folder, or a class folder without images
        raise FileNotFoundError(f"{base}: {e} {_HOW_TO_GET['imagenet']}") from None
    expected = DATASETS["imagenet"][1]
    if len(folder.classes) != expected:  # a subset shifts every label: refuse rather than mislabel
        raise FileNotFoundError(f"{base} holds {len(folder.classes)} class folders, expected the {expected} "
                                f"ILSVRC2012 wnids (labels are their sorted positions): "
                                f"{_HOW_TO_GET['imagenet']}")
    return Dataset("imagenet", folder, np.asarray(folder.targets, dtype=np.int64))


def _imagenet_transform():
    """Resize(256) -> CenterCrop(224) -> ToTensor() after ImageFolder's RGB conversion (grayscale and CMYK
    JPEGs exist in the set): the 224 crop fed unresized to the 256 UNet."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])


def images_digest(dataset: Dataset, indices) -> str:
    """sha256 over the selected image tensors and labels (an audit fingerprint of the data subset)."""
    h = hashlib.sha256()
    for i in indices:
        x, y = dataset.get(i)
        h.update(x.contiguous().numpy().tobytes())
        h.update(int(y).to_bytes(4, "little"))
    return h.hexdigest()
