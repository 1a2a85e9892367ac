"""Stand-ins (diffsmooth/standin.py): the real containers, key layouts equal to the manifests, device tags,
reproducibility, never overwriting a user's file, and the dataset loaders reading them."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from diffsmooth import standin
from diffsmooth.cli import main
from diffsmooth.data import load_dataset
from diffsmooth.models import load_classifier, load_diffusion

from conftest import REPO

MODELS = REPO / "tests" / "data" / "models"


def _manifest(name: str) -> dict:
    return json.loads((MODELS / f"{name}.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _locations(path: Path) -> set:
    seen = []
    torch.load(path, map_location=lambda storage, location: (seen.append(location), storage)[1], weights_only=True)
    return set(seen)


def _assert_layout(state_dict: dict, manifest_state: dict) -> None:
    assert list(state_dict) == list(manifest_state)
    for key, spec in manifest_state.items():
        assert list(state_dict[key].shape) == spec["shape"], key
        assert str(state_dict[key].dtype) == f"torch.{spec['dtype']}", key


# ---------------------------------------------------------------------------------------------------
# CIFAR-10 test_batch

@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    standin.write_cifar10_test_batch(root / "cifar-10-batches-py" / "test_batch", 30, seed=5)
    return root


def test_cifar10_batch_is_a_python2_protocol2_pickle(cifar_root):
    raw = (cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert raw[:2] == b"\x80\x02"  # PROTO 2
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    names = {op for op, _ in ops}
    assert "SHORT_BINSTRING" in names and "BINSTRING" in names  # Python 2 str, not _codecs.encode(...)
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops and ("GLOBAL", "numpy dtype") in ops
    assert not any(op == "GLOBAL" and arg.startswith(("_codecs", "numpy._core")) for op, arg in ops)
    assert ("BINPUT", 0) not in ops  # cPickle numbered its memo from 1
    for encoding, keys in (("latin1", ["batch_label", "labels", "data", "filenames"]),
                           ("bytes", [b"batch_label", b"labels", b"data", b"filenames"])):
        batch = pickle.loads(raw, encoding=encoding)
        assert list(batch) == keys
        data, labels, names_ = batch[keys[2]], batch[keys[1]], batch[keys[3]]
        assert data.dtype == np.uint8 and data.shape == (30, 3072)
        assert isinstance(labels, list) and all(isinstance(y, int) and 0 <= y < 10 for y in labels)
        assert len(names_) == 30 and isinstance(names_[0], str if encoding == "latin1" else bytes)
        assert batch[keys[0]] == ("testing batch 1 of 1" if encoding == "latin1" else b"testing batch 1 of 1")


def test_cifar10_batch_is_reproducible_per_seed(tmp_path, cifar_root):
    again = standin.write_cifar10_test_batch(tmp_path / "a" / "test_batch", 30, seed=5)
    other = standin.write_cifar10_test_batch(tmp_path / "b" / "test_batch", 30, seed=6)
    assert _sha(again) == _sha(cifar_root / "cifar-10-batches-py" / "test_batch") != _sha(other)


def test_cifar10_loader_reads_the_batch_in_order(cifar_root):
    batch = pickle.loads((cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="latin1")
    dataset = load_dataset("cifar10", cifar_root)
    assert len(dataset) == 30
    for i in (0, 17, 29):
        x, y = dataset.get(i)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        expected = torch.from_numpy(batch["data"][i].reshape(3, 32, 32)).float() / 255  # ToTensor()
        assert torch.equal(x, expected) and y == batch["labels"][i]


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps({"data": np.zeros((2, 5), np.uint8),
                                                                        "labels": [0, 1]})])
def test_damaged_cifar10_batch_is_one_clear_error(tmp_path, content):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert "test_batch" in message and "fetch cifar-10-python.tar.gz again" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------
# Checkpoints

@pytest.fixture(scope="module")
def resnet110(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "noise_0.25" / "checkpoint.pth.tar"
    return standin.write_classifier(path, "cifar_resnet110", "cifar10", "normalize", seed=3)


def test_cohen_checkpoint_container_legacy_cuda_and_sgd_state(resnet110):
    assert not zipfile.is_zipfile(resnet110)  # torch.save(..., _use_new_zipfile_serialization=False)
    assert _locations(resnet110) == {"cuda:0"}
    if not torch.cuda.is_available():  # what a loader without map_location meets on a CPU node
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(resnet110, weights_only=True)
    ckpt = torch.load(resnet110, map_location="cpu", weights_only=True)
    assert list(ckpt) == ["epoch", "arch", "state_dict", "optimizer"]
    assert ckpt["epoch"] == 90 and ckpt["arch"] == "cifar_resnet110"
    _assert_layout(ckpt["state_dict"], _manifest("cohen_cifar_resnet110")["state_dict"])
    counters = [v for k, v in ckpt["state_dict"].items() if k.endswith("num_batches_tracked")]
    assert counters and all(v.dtype == torch.int64 and v.ndim == 0 and int(v) > 0 for v in counters)
    params = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and "running_" not in k]
    optimizer = ckpt["optimizer"]
    assert len(optimizer["state"]) == len(params) == len(optimizer["param_groups"][0]["params"])
    for index, key in zip(optimizer["param_groups"][0]["params"], params):
        assert optimizer["state"][index]["momentum_buffer"].shape == ckpt["state_dict"][key].shape
    group = optimizer["param_groups"][0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4 and group["lr"] == pytest.approx(1e-3)


def test_cohen_checkpoint_loads_and_is_reproducible(resnet110, tmp_path):
    model, info = load_classifier(resnet110, "cifar10", arch="cifar_resnet110", normalization="normalize")
    assert info["format"] == "checkpoint_dict" and info["epoch"] == 90
    # the legacy format keys storages by memory address (as the 2019 files do): equal tensors, not equal bytes
    again = standin.write_classifier(tmp_path / "same.pth.tar", "cifar_resnet110", "cifar10", "normalize", seed=3)
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in (resnet110, again))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(a["optimizer"]["state"][i]["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i in a["optimizer"]["state"])
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 3, 32, 32))).all()


def test_resnet50_checkpoint_has_the_dataparallel_layout(tmp_path):
    path = standin.write_classifier(tmp_path / "rn50.pth.tar", "resnet50", "imagenet", "input_center", seed=1)
    assert not zipfile.is_zipfile(path) and _locations(path) == {"cuda:0"}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    _assert_layout(ckpt["state_dict"], _manifest("cohen_imagenet_resnet50")["state_dict"])
    assert all(k.startswith("1.module.") for k in ckpt["state_dict"])
    load_classifier(path, "imagenet", arch="resnet50", normalization="input_center")


def test_cuda_tag_is_only_set_inside_saved_from(tmp_path):
    with standin.saved_from():
        torch.save({"x": torch.ones(2)}, tmp_path / "tagged.pt")
    torch.save({"x": torch.ones(2)}, tmp_path / "plain.pt")
    assert _locations(tmp_path / "tagged.pt") == {"cuda:0"}
    assert _locations(tmp_path / "plain.pt") == {"cpu"}


def test_improved_diffusion_unet_is_a_bare_state_dict_of_the_manifest(tmp_path):
    manifest = _manifest("improved_diffusion_cifar10_uncond_50M_500K")
    path = standin.write_diffusion(tmp_path / "cifar10_uncond_50M_500K.pt", manifest["flags"], seed=0)
    assert zipfile.is_zipfile(path) and _locations(path) == {"cuda:0"}
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # no container dict
    _assert_layout(state, manifest["state_dict"])
    _, info = load_diffusion(path, manifest["flags"])
    assert info["num_parameters"] == manifest["num_parameters"]


def test_guided_diffusion_family_matches_the_reference_layout(tmp_path):
    """The resblock_updown / num_head_channels family, at the size of the reference vectors."""
    flags = _manifest("guided_diffusion_small")["flags"]
    path = standin.write_diffusion(tmp_path / "small.pt", flags, seed=0)
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = {k[len("model."):]: v for k, v in load_file(str(MODELS / "guided_diffusion_small.safetensors"))
                 .items() if k.startswith("model.")}
    assert sorted(state) == sorted(reference)  # safetensors stores its keys sorted
    assert all(state[k].shape == v.shape and state[k].dtype == v.dtype for k, v in reference.items())


# ---------------------------------------------------------------------------------------------------
# ImageNet validation folder

@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    standin.write_imagenet_val(root / "val", images_per_class=1, seed=0)
    return root


def test_imagenet_folder_layout(imagenet_root):
    from timm.data import ImageNetInfo

    val = imagenet_root / "val"
    folders = sorted(p.name for p in val.iterdir() if p.is_dir())
    assert folders == ImageNetInfo("imagenet-1k").label_names() and len(folders) == 1000
    files = sorted(val.glob("n*/*"))
    assert len(files) == 1000 and all(p.suffix == ".JPEG" and p.name.startswith("ILSVRC2012_val_") for p in files)
    numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in files)
    assert numbers == list(range(1, 1001))
    modes = {}
    sizes = set()
    for p in files[:40]:
        with Image.open(p) as im:
            assert im.format == "JPEG"
            modes[im.mode] = modes.get(im.mode, 0) + 1
            sizes.add(im.size)
    assert modes["L"] == 1 and modes["CMYK"] == 1 and len(sizes) > 30
    assert any(w % 2 for w, h in sizes) and any(min(w, h) < 256 for w, h in sizes)


def test_imagenet_loader_is_imagefolder_order_and_rgb(imagenet_root):
    from torchvision import transforms

    dataset = load_dataset("imagenet", imagenet_root)
    assert len(dataset) == 1000 and list(dataset.labels[:4]) == [0, 1, 2, 3]
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    first = sorted((imagenet_root / "val" / "n01440764").iterdir())[0]
    second_class = sorted((imagenet_root / "val" / "n01443537").iterdir())[0]
    for i, path, mode in ((0, first, "L"), (1, second_class, "CMYK")):
        x, y = dataset.get(i)
        with Image.open(path) as im:
            assert im.mode == mode
            expected = tf(im.convert("RGB"))
        assert x.shape == (3, 224, 224) and torch.equal(x, expected) and y == i
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_imagenet_subset_and_damaged_image_are_clear_errors(tmp_path):
    val = tmp_path / "val"
    for wnid in ("n01440764", "n01443537"):
        (val / wnid).mkdir(parents=True)
        Image.new("RGB", (300, 280)).save(val / wnid / "a.JPEG")
    with pytest.raises(FileNotFoundError, match="holds 2 class folders, expected the 1000"):
        load_dataset("imagenet", tmp_path)
    (val / "n01440764" / "a.JPEG").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "val2").mkdir()
    with pytest.raises(FileNotFoundError, match="class folder"):
        load_dataset("imagenet", tmp_path / "val2")
    from torchvision import datasets

    from diffsmooth.data import Dataset, _imagenet_transform

    folder = datasets.ImageFolder(str(val), transform=_imagenet_transform())  # as the loader builds it
    broken = Dataset("imagenet", folder, np.asarray(folder.targets))
    with pytest.raises(ValueError, match="a.JPEG .*not a readable image"):
        broken.get(0)


# ---------------------------------------------------------------------------------------------------
# Never overwriting, the CLI

def _cut_cifar_config(tmp_path) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())
    cfg["sigmas"] = [0.25]
    cfg["models"] = [m for m in cfg["models"] if m["id"] == "gaussian"]
    cfg["models"][0]["grid"] = {"0.25": [0.25]}
    cfg["tables"] = {"table12": cfg["tables"]["table12"]}
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_writes_each_expected_file_and_never_overwrites(tmp_path, capsys):
    config = _cut_cifar_config(tmp_path)
    out = tmp_path / "out"
    assert main(["stand-in", "--configfile", str(config), "--out-root", str(out), "-n"]) == 0
    listed = capsys.readouterr().out
    assert "would be written" in listed and "test_batch" in listed and not out.exists()
    user_file = out / "data/checkpoints/cohen/models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar"
    user_file.parent.mkdir(parents=True)
    user_file.write_bytes(b"a user's real checkpoint")
    old = os.umask(0o022)
    try:
        assert main(["stand-in", "--configfile", str(config), "--out-root", str(out), "--cifar-images", "20"]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    assert f"kept      {user_file}" in printed and user_file.read_bytes() == b"a user's real checkpoint"
    batch = out / "data/cifar10/cifar-10-batches-py/test_batch"
    assert f"written   {batch}" in printed
    assert all(item.path.exists() for item in standin.expected(yaml.safe_load(config.read_text()), out))
    assert batch.stat().st_mode & 0o777 == 0o644  # the umask's mode, not mkstemp's 0600
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))
    assert load_dataset("cifar10", out / "data/cifar10").get(0)[0].shape == (3, 32, 32)
    assert main(["stand-in", "--configfile", str(config), "--out-root", str(out), "--force",
                 "--cifar-images", "20"]) == 0
    assert user_file.read_bytes() != b"a user's real checkpoint"  # --force replaces
    load_classifier(user_file, "cifar10", arch="cifar_resnet110", normalization="normalize")


def test_imagenet_folder_of_a_user_is_never_replaced(tmp_path, capsys):
    val = tmp_path / "val"
    (val / "n01440764").mkdir(parents=True)
    (val / "n01440764" / "ILSVRC2012_val_00000293.JPEG").write_bytes(b"real")
    with pytest.raises(standin.StandInError, match="was not written by `diffsmooth stand-in`"):
        standin.write_imagenet_val(val, 1, force=True)
    with pytest.raises(standin.StandInError, match="exists"):
        standin.write_imagenet_val(val, 1)
    assert (val / "n01440764" / "ILSVRC2012_val_00000293.JPEG").read_bytes() == b"real"
    # class folders directly under the root (also a layout the loader reads): a stand-in val/ would shadow them
    flat = tmp_path / "flat"
    (flat / "n01440764").mkdir(parents=True)
    with pytest.raises(standin.StandInError, match="would shadow"):
        standin.write_imagenet_val(flat / "val", 1)
    assert not (flat / "val").exists()


def test_digits_config_needs_no_stand_in(capsys):
    assert main(["stand-in", "--configfile", str(REPO / "config" / "fast.yaml"), "-n"]) == 0
    assert "nothing to stand in for" in capsys.readouterr().out


def test_bad_option_is_one_line(tmp_path, capsys):
    config = _cut_cifar_config(tmp_path)
    assert main(["stand-in", "--configfile", str(config), "--out-root", str(tmp_path), "--cifar-images", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffsmooth stand-in: error:") and err.count("\n") == 1
