"""Classifier zoo: reference checkpoint layouts, normalisation layers, forward equivalence."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffsmooth.models import (ARCHITECTURES, InputCenterLayer, NormalizeLayer, classifier, digits_mlp,
                               load_classifier, prepare_for_inference)
from diffsmooth.models.layers import NORMALIZATIONS
from diffsmooth.models.zoo import resolve_normalization

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data" / "models"


def _json(name):
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("arch, dataset, manifest_name", [
    ("cifar_resnet110", "cifar10", "cohen_cifar_resnet110"),
    ("resnet50", "imagenet", "cohen_imagenet_resnet50"),
])
def test_layout_matches_reference_manifest(arch, dataset, manifest_name):
    manifest = _json(manifest_name)
    with torch.device("meta"):
        model = classifier(arch, dataset)
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])
    for key, spec in manifest["state_dict"].items():
        assert list(sd[key].shape) == spec["shape"], key
        assert str(sd[key].dtype) == "torch." + spec["dtype"], key
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    assert isinstance(model[0], NormalizeLayer)
    kind, stats = resolve_normalization(arch, dataset)
    assert kind == "normalize"
    assert NORMALIZATIONS[stats] == (manifest["flags"]["normalize_mean"], manifest["flags"]["normalize_std"])


def test_default_normalisation_statistics():
    model = classifier("cifar_resnet20", "cifar10")
    assert torch.allclose(model[0].means.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert torch.allclose(model[0].sds.flatten(), torch.tensor([0.2023, 0.1994, 0.2010]))
    centred = classifier("cifar_resnet20", "cifar10", normalization="input_center")
    assert isinstance(centred[0], InputCenterLayer)
    vit = classifier("cifar_resnet20", "cifar10", normalization="vit")
    assert torch.allclose(vit[0](torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)).flatten(), torch.tensor([-1.0, 0, 1]))
    with torch.device("meta"):
        r32 = classifier("imagenet32_resnet110", "imagenet32")
    assert r32[1].fc.out_features == 1000
    assert torch.allclose(classifier("imagenet32_resnet110", "imagenet32")[0].means.flatten(),
                          torch.tensor([0.4914, 0.4822, 0.4465]))  # SmoothAdv uses CIFAR-10 stats for ImageNet32


def test_beit_layout():
    with torch.device("meta"):
        model = classifier("beit_large_patch16_224", "imagenet")
    keys = list(model.state_dict())
    assert all(k.startswith("1.") for k in keys)
    assert {"1.cls_token", "1.patch_embed.proj.weight", "1.blocks.23.attn.q_bias", "1.blocks.23.attn.v_bias",
            "1.blocks.0.attn.relative_position_bias_table", "1.blocks.0.gamma_1", "1.fc_norm.weight",
            "1.head.weight"} <= set(keys)
    assert model.state_dict()["1.head.weight"].shape == (1000, 1024)
    assert sum(p.numel() for p in model.parameters()) == 304_430_568
    assert isinstance(model[0], NormalizeLayer)
    assert resolve_normalization("beit_large_patch16_224", "imagenet") == ("vit", "vit")  # 2x - 1


def test_digits_mlp_matches_the_lead_builder_layout():
    ours = classifier("digits_mlp", "digits")
    ref = digits_mlp()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert torch.allclose(ours[0].means, ref[0].means) and torch.allclose(ours[0].sds, ref[0].sds)
    assert classifier("digits_mlp", "digits", width=32)[1][1].out_features == 32


def test_no_normalisation_keys_in_any_classifier():
    for name, arch in ARCHITECTURES.items():
        with torch.device("meta"):
            model = classifier(name, arch.datasets[0])
        assert not any(k.startswith("0.") for k in model.state_dict()), name


def test_invalid_choices_raise_value_error_naming_valid_ones():
    with pytest.raises(ValueError, match="cifar_resnet110"):
        classifier("resnet18", "cifar10")
    with pytest.raises(ValueError, match="cifar10"):
        classifier("cifar_resnet110", "mnist")
    with pytest.raises(ValueError, match="imagenet"):
        classifier("resnet50", "cifar10")
    with pytest.raises(ValueError, match="input_center"):
        classifier("cifar_resnet110", "cifar10", normalization="standardize")


def _resnet20_vector():
    blob = load_file(str(DATA / "cohen_cifar_resnet20.safetensors"))
    return blob, {k[len("model."):]: v for k, v in blob.items() if k.startswith("model.")}


def test_resnet20_forward_vector_through_checkpoint_dict(tmp_path):
    blob, state_dict = _resnet20_vector()
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": state_dict,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}, path)
    model, info = load_classifier(path, "cifar10")
    assert not model.training
    assert info["arch"] == "cifar_resnet20" and info["normalization"] == "normalize" and info["epoch"] == 90
    with torch.no_grad():
        torch.testing.assert_close(model[0](blob["input.x"]), blob["aux.normalized_input"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(blob["input.x"]), blob["output"], atol=1e-5, rtol=1e-5)


# Measured on CPU (torch 2.14, 1 thread): bf16 autocast max abs error 0.0112 on logits of max |y| 2.42;
# channels-last fp32 7e-7. Tolerance ~4.5x the bf16 error; channels-last keeps the fp32 1e-5.
def test_resnet20_bf16_and_channels_last(tmp_path):
    blob, state_dict = _resnet20_vector()
    model = classifier("cifar_resnet20", "cifar10")
    model.load_state_dict(state_dict)
    x, ref = blob["input.x"], blob["output"]
    with torch.no_grad():
        out_cl = prepare_for_inference(model, "cpu", channels_last=True)(x)
        out_bf16 = prepare_for_inference(model, "cpu", channels_last=True, precision="bf16")(x)
    torch.testing.assert_close(out_cl, ref, atol=1e-5, rtol=1e-5)
    assert (out_bf16 - ref).abs().max() < 0.05
    assert torch.equal(out_bf16.argmax(1), ref.argmax(1))
