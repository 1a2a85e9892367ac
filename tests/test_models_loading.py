"""Checkpoint loading: tolerated prefixes, and clear CheckpointErrors for everything else."""
import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffsmooth.models import (CheckpointError, DigitsEpsMLP, classifier, digits_mlp, load_classifier,
                               load_diffusion, sha256_file)

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data" / "models"
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


@pytest.fixture(scope="module")
def resnet20():
    blob = load_file(str(DATA / "cohen_cifar_resnet20.safetensors"))
    state_dict = {k[len("model."):]: v for k, v in blob.items() if k.startswith("model.")}
    return blob, state_dict


def _save(path, state_dict, arch="cifar_resnet20", **extra):
    torch.save({"epoch": 1, "arch": arch, "state_dict": state_dict, **extra} if arch else state_dict, path)
    return path


def _logits(model, blob):
    with torch.no_grad():
        return model(blob["input.x"])


def test_info_and_sha256(resnet20, tmp_path):
    _, sd = resnet20
    path = _save(tmp_path / "ckpt.pth.tar", sd)
    model, info = load_classifier(path, "cifar10")
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert {"path": str(path), "arch": "cifar_resnet20", "normalization": "normalize",
            "normalization_stats": "cifar10", "num_tensors": 128, "num_parameters": 272474}.items() <= info.items()


@pytest.mark.parametrize("rename", [
    lambda k: "module." + k,                       # whole Sequential saved from DataParallel
    lambda k: "1.module." + k[len("1."):],         # network wrapped in DataParallel (not the CIFAR reference)
])
def test_module_prefix_is_tolerated(resnet20, tmp_path, rename):
    blob, sd = resnet20
    model, info = load_classifier(_save(tmp_path / "c.pt", {rename(k): v for k, v in sd.items()}), "cifar10")
    assert info["renamed_module_prefix"] == len(sd)
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_resnet50_without_module_prefix_is_tolerated(tmp_path):
    torch.manual_seed(0)
    reference = classifier("resnet50", "imagenet")
    plain = {k.replace("1.module.", "1.", 1): v for k, v in reference.state_dict().items()}
    assert not any(".module." in k for k in plain)
    model, info = load_classifier(_save(tmp_path / "r50.pt", plain, arch="resnet50"), "imagenet")
    assert info["renamed_module_prefix"] == len(plain)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-5, rtol=1e-5)


def test_old_checkpoint_without_num_batches_tracked_loads(resnet20, tmp_path):
    blob, sd = resnet20
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    model, info = load_classifier(_save(tmp_path / "old.pt", old), "cifar10")
    assert info["filled_num_batches_tracked"] == len(sd) - len(old) > 0
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_normalisation_buffers_with_matching_values_are_accepted(resnet20, tmp_path):
    blob, sd = resnet20
    stored = {"0.means": torch.tensor(CIFAR_MEAN), "0.sds": torch.tensor(CIFAR_STD), **sd}
    model, info = load_classifier(_save(tmp_path / "n.pt", stored), "cifar10")
    assert info["dropped_non_persistent"] == 2
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_normalize_layer_checkpoint_into_input_center_model_fails(resnet20, tmp_path):
    _, sd = resnet20
    stored = {"0.means": torch.tensor(CIFAR_MEAN), "0.sds": torch.tensor(CIFAR_STD), **sd}
    with pytest.raises(CheckpointError, match="wrong normalisation layer") as err:
        load_classifier(_save(tmp_path / "n.pt", stored), "cifar10", normalization="input_center")
    assert "NormalizeLayer" in str(err.value) and "normalization='normalize'" in str(err.value)


def test_input_center_checkpoint_into_normalize_model_fails(resnet20, tmp_path):
    _, sd = resnet20
    stored = {"0.means": torch.tensor(CIFAR_MEAN), **sd}
    with pytest.raises(CheckpointError, match="wrong normalisation layer") as err:
        load_classifier(_save(tmp_path / "c.pt", stored), "cifar10")
    assert "InputCenterLayer" in str(err.value) and "normalization='input_center'" in str(err.value)
    model, _ = load_classifier(tmp_path / "c.pt", "cifar10", normalization="input_center")  # the right choice loads


def test_normalisation_statistics_mismatch_fails(resnet20, tmp_path):
    _, sd = resnet20
    stored = {"0.means": torch.tensor([0.485, 0.456, 0.406]), "0.sds": torch.tensor([0.229, 0.224, 0.225]), **sd}
    with pytest.raises(CheckpointError, match="differ from the model's") as err:
        load_classifier(_save(tmp_path / "n.pt", stored), "cifar10")
    assert "0.means" in str(err.value) and "normalisation" in str(err.value)


def test_truncated_state_dict_fails_with_explanation(resnet20, tmp_path):
    _, sd = resnet20
    keys = list(classifier("cifar_resnet20", "cifar10").state_dict())  # state_dict order, as torch.save wrote it
    partial = {k: sd[k] for k in keys[:100]}
    with pytest.raises(CheckpointError) as err:
        load_classifier(_save(tmp_path / "p.pt", partial), "cifar10")
    message = str(err.value)
    assert "28 missing, 0 unexpected" in message and "truncated or partial" in message
    assert keys[100] in message and "first 100 of the 128 tensors" in message


def test_wrong_architecture_fails_with_explanation(resnet20, tmp_path):
    _, sd = resnet20
    with pytest.raises(CheckpointError) as err:
        load_classifier(_save(tmp_path / "bare.pt", sd, arch=None), "cifar10", arch="cifar_resnet110")
    assert "1.layer1.3.conv1.weight" in str(err.value)
    assert "Likely cause: the checkpoint holds a subset (128 of 668)" in str(err.value)
    with pytest.raises(CheckpointError, match="Likely cause: wrong architecture"):
        load_classifier(tmp_path / "bare.pt", "imagenet", arch="resnet50")
    with pytest.raises(CheckpointError, match="Likely cause: wrong number of classes"):
        load_classifier(_save(tmp_path / "c1000.pt", {**sd, "1.fc.weight": torch.zeros(1000, 64),
                                                     "1.fc.bias": torch.zeros(1000)}), "cifar10")
    with pytest.raises(CheckpointError, match="stores arch='cifar_resnet20'"):
        load_classifier(_save(tmp_path / "c.pt", sd), "cifar10", arch="cifar_resnet110")
    with pytest.raises(CheckpointError, match="lack the '1.' prefix"):
        load_classifier(_save(tmp_path / "net.pt", {k[2:]: v for k, v in sd.items()}), "cifar10")


def test_bare_state_dict_needs_arch(resnet20, tmp_path):
    blob, sd = resnet20
    path = _save(tmp_path / "bare.pt", sd, arch=None)
    with pytest.raises(CheckpointError, match="pass arch=") as err:
        load_classifier(path, "cifar10")
    assert "cifar_resnet110" in str(err.value)
    model, info = load_classifier(path, "cifar10", arch="cifar_resnet20")
    assert info["format"] == "state_dict"
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_safetensors_state_dict(resnet20, tmp_path):
    blob, sd = resnet20
    save_file(sd, str(tmp_path / "r20.safetensors"))
    model, _ = load_classifier(tmp_path / "r20.safetensors", "cifar10", arch="cifar_resnet20")
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_missing_file(tmp_path):
    path = tmp_path / "data" / "checkpoints" / "cohen" / "noise_0.25" / "checkpoint.pth.tar"
    with pytest.raises(CheckpointError, match="not found") as err:
        load_classifier(path, "cifar10")
    assert str(path) in str(err.value) and "data/checkpoints/" in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_diffusion(tmp_path / "cifar10_uncond_50M_500K.pt", flags={})


def test_truncated_file(resnet20, tmp_path):
    _, sd = resnet20
    path = _save(tmp_path / "c.pt", sd)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_classifier(path, "cifar10")


def test_untrusted_pickle_needs_opt_in(resnet20, tmp_path):
    blob, sd = resnet20
    path = _save(tmp_path / "c.pt", sd, args=argparse.Namespace(lr=0.1))  # many training scripts save args
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_classifier(path, "cifar10")
    model, _ = load_classifier(path, "cifar10", trust_pickle=True)
    torch.testing.assert_close(_logits(model, blob), blob["output"], atol=1e-5, rtol=1e-5)


def test_digits_checkpoints(tmp_path):
    torch.manual_seed(0)
    eps = DigitsEpsMLP(width=64, blocks=1, emb_dim=32)
    path = tmp_path / "eps.pt"
    torch.save({"arch": "digits_eps_mlp", "state_dict": eps.state_dict(),
                "kwargs": dict(width=64, blocks=1, emb_dim=32)}, path)
    loaded, info = load_diffusion(path)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 10.5, 99.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), eps.eval()(x, t), atol=0, rtol=0)
    assert info["arch"] == "digits_eps_mlp" and info["kwargs"]["width"] == 64
    torch.save({"arch": "digits_eps_mlp", "state_dict": eps.state_dict(), "kwargs": dict(width=32)}, path)
    with pytest.raises(CheckpointError, match="wrong kwargs"):
        load_diffusion(path)

    clf = digits_mlp(width=48)
    torch.save({"arch": "digits_mlp", "state_dict": clf.state_dict(), "kwargs": {"width": 48}}, tmp_path / "clf.pt")
    loaded_clf, _ = load_classifier(tmp_path / "clf.pt", "digits")
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded_clf(x), clf(x), atol=0, rtol=0)


def _unet_vector(name):
    blob = load_file(str(DATA / f"{name}.safetensors"))
    meta = json.loads((DATA / f"{name}.json").read_text())
    return blob, {k[len("model."):]: v for k, v in blob.items() if k.startswith("model.")}, meta["flags"]


def test_unet_bare_state_dict_needs_flags(tmp_path):
    _, sd, flags = _unet_vector("guided_diffusion_small")
    torch.save(sd, tmp_path / "unet.pt")
    with pytest.raises(CheckpointError, match="pass the reference flags"):
        load_diffusion(tmp_path / "unet.pt")
    torch.save({"arch": "unet", "flags": flags, "state_dict": sd}, tmp_path / "with_flags.pt")
    model, info = load_diffusion(tmp_path / "with_flags.pt")
    assert info["flags"] == flags and info["diffusion"] is None  # network flags only: no rescale_timesteps


def test_unet_wrong_flags_fail_with_explanation(tmp_path):
    blob, sd, flags = _unet_vector("guided_diffusion_small")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "unet.pt")  # DataParallel-saved
    model, info = load_diffusion(tmp_path / "unet.pt", flags=flags)
    assert info["renamed_module_prefix"] == len(sd)
    with torch.no_grad():
        torch.testing.assert_close(model(blob["input.x"], blob["input.t"]), blob["output"], atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="resblock_updown"):
        load_diffusion(tmp_path / "unet.pt", flags={**flags, "resblock_updown": False})
    with pytest.raises(CheckpointError, match="learn_sigma"):
        load_diffusion(tmp_path / "unet.pt", flags={**flags, "learn_sigma": False})
    with pytest.raises(CheckpointError, match="different shape"):
        load_diffusion(tmp_path / "unet.pt", flags={**flags, "num_channels": 64})
    partial = {k: v for k, v in sd.items() if not k.startswith("out.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="truncated or partial") as err:
        load_diffusion(tmp_path / "partial.pt", flags=flags)
    assert "out.2.weight" in str(err.value) and "4 missing" in str(err.value)


def test_beit_relative_position_index_saved_by_older_timm_is_accepted(tmp_path):
    # timm 0.9.x (DiffSmooth's pin) saved BEiT's relative_position_index; current timm keeps it non-persistent.
    # A tiny BEiT exercises the same check without materialising BEiT-L.
    import timm
    from diffsmooth.models.checkpoints import _check_and_load, _classifier_hint
    from diffsmooth.models.layers import normalization_layer

    def tiny_beit():
        net = timm.create_model("beit_base_patch16_224", pretrained=False, depth=1, embed_dim=64, num_heads=2,
                                img_size=32, num_classes=10)
        return torch.nn.Sequential(normalization_layer("normalize", "vit"), net).eval()

    torch.manual_seed(0)
    saved = tiny_beit()
    index_key = "1.blocks.0.attn.relative_position_index"
    state_dict = {**saved.state_dict(), index_key: saved[1].blocks[0].attn.relative_position_index.clone()}
    torch.manual_seed(1)
    fresh = tiny_beit()
    notes = _check_and_load(fresh, dict(state_dict), tmp_path / "beit.pt", "tiny BEiT", _classifier_hint)
    assert notes["dropped_non_persistent"] == 1
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), saved(x), atol=0, rtol=0)
    state_dict[index_key] = torch.zeros_like(state_dict[index_key])
    with pytest.raises(CheckpointError, match="relative_position_index"):
        _check_and_load(tiny_beit(), dict(state_dict), tmp_path / "beit.pt", "tiny BEiT", _classifier_hint)
