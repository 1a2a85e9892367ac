"""The ADM UNet: exact checkpoint layouts (meta device) and forward equivalence with the reference vectors."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffsmooth.models import (UNetModel, diffusion_settings_from_flags, load_diffusion, prepare_for_inference,
                               unet_from_flags)
from diffsmooth.models.unet import AttentionBlock, timestep_embedding, unet_kwargs_from_flags

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data" / "models"
FULL_SIZE = ["improved_diffusion_cifar10_uncond_50M_500K", "guided_diffusion_256x256_uncond"]
VECTORS = ["improved_diffusion_small", "improved_diffusion_small_noscaleshift", "guided_diffusion_small"]


def _json(name):
    return json.loads((DATA / f"{name}.json").read_text())


def _assert_layout(model, manifest):
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])  # names and order
    for key, spec in manifest["state_dict"].items():
        assert list(sd[key].shape) == spec["shape"], key
        assert str(sd[key].dtype) == "torch." + spec["dtype"], key
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_layout_from_flags(name):
    manifest = _json(name)
    with torch.device("meta"):  # never materialise the 553M-parameter model
        model = unet_from_flags(manifest["flags"])
    _assert_layout(model, manifest)
    # Head counts per attention block, as the reference resolved them (num_heads vs num_head_channels).
    blocks = dict(model.named_modules())
    for block_name, spec in manifest["attention_blocks"].items():
        assert isinstance(blocks[block_name], AttentionBlock)
        assert blocks[block_name].num_heads == spec["num_heads"], block_name
        assert blocks[block_name].legacy_order


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_layout_from_constructor_kwargs(name):
    manifest = _json(name)
    with torch.device("meta"):
        model = UNetModel(**manifest["unet_kwargs"])
    _assert_layout(model, manifest)


def test_flags_resolve_to_reference_constructor_arguments():
    for name in FULL_SIZE + VECTORS:
        manifest = _json(name)
        resolved = unet_kwargs_from_flags(manifest["flags"])
        for key, value in manifest["unet_kwargs"].items():
            if key in ("conv_resample", "dims"):
                continue
            got = resolved[key]
            if key == "attention_resolutions":
                got, value = sorted(got), sorted(value)
            if isinstance(value, list):
                got = list(got)
            assert got == value, (name, key)


def test_flag_rules():
    base = dict(image_size=32, num_channels=32, num_res_blocks=1, attention_resolutions="16", num_heads=2)
    kwargs = unet_kwargs_from_flags(base)
    assert kwargs["channel_mult"] == (1, 2, 2, 2)  # derived from image_size when absent
    assert kwargs["attention_resolutions"] == (2,)  # pixel size 16 -> downsample rate 2
    assert kwargs["out_channels"] == 3 and kwargs["num_head_channels"] == -1 and not kwargs["resblock_updown"]
    assert unet_kwargs_from_flags({**base, "learn_sigma": True})["out_channels"] == 6
    assert unet_kwargs_from_flags({**base, "channel_mult": "", "image_size": 64})["channel_mult"] == (1, 2, 3, 4)
    assert unet_kwargs_from_flags({**base, "num_head_channels": -1})["num_heads"] == 2
    with torch.device("meta"):
        plain = unet_from_flags(base)
        fp16 = unet_from_flags({**base, "use_fp16": True, "noise_schedule": "cosine", "diffusion_steps": 4000})
    assert any(k.endswith(".op.weight") for k in plain.state_dict())  # conv Downsample when resblock_updown absent
    assert {k: (v.shape, v.dtype) for k, v in plain.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in fp16.state_dict().items()}  # use_fp16 / diffusion flags change no weight
    with pytest.raises(ValueError, match="image_size"):
        unet_kwargs_from_flags({**base, "image_size": 48})


def test_diffusion_settings_from_flags():
    assert diffusion_settings_from_flags(_json(FULL_SIZE[0])["flags"]) == dict(
        schedule="cosine", num_timesteps=4000, rescale_timesteps=True, learn_sigma=True)
    assert diffusion_settings_from_flags(_json(FULL_SIZE[1])["flags"]) == dict(
        schedule="linear", num_timesteps=1000, rescale_timesteps=False, learn_sigma=True)
    with pytest.raises(ValueError, match="rescale_timesteps"):  # its default differs between the two families
        diffusion_settings_from_flags({"noise_schedule": "cosine"})


def test_full_size_imagenet_unet_is_fully_convolutional_at_224():
    with torch.device("meta"):  # shapes only
        model = unet_from_flags(_json(FULL_SIZE[1])["flags"]).eval()
        out = model(torch.empty(2, 3, 224, 224), torch.tensor([145, 396]))
    assert out.shape == (2, 6, 224, 224)


def test_scaled_down_imagenet_flags_run_at_224():
    flags = {**_json(FULL_SIZE[1])["flags"], "num_channels": 32, "num_res_blocks": 1, "num_head_channels": 32}
    torch.manual_seed(0)
    model = unet_from_flags(flags).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), torch.tensor([259]))
    assert out.shape == (1, 6, 224, 224) and torch.isfinite(out).all()


def _vector(name):
    blob = load_file(str(DATA / f"{name}.safetensors"))
    state_dict = {k[len("model."):]: v for k, v in blob.items() if k.startswith("model.")}
    return blob, state_dict, _json(name)


def _load_vector_model(name, tmp_path):
    blob, state_dict, meta = _vector(name)
    path = tmp_path / f"{name}.pt"
    torch.save(state_dict, path)  # a bare UNet state_dict, like the OpenAI files
    model, info = load_diffusion(path, flags=meta["flags"])
    return model, info, blob


@pytest.mark.parametrize("name", VECTORS)
def test_forward_vector(name, tmp_path):
    model, info, blob = _load_vector_model(name, tmp_path)
    assert not model.training  # dropout off
    assert info["arch"] == "unet" and len(info["sha256"]) == 64
    assert info["num_parameters"] == _json(name)["num_model_parameters"]
    x, t = blob["input.x"], blob["input.t"]
    with torch.no_grad():
        out = model(x, t)
        emb_in = timestep_embedding(t, model.model_channels)
        emb = model.time_embed(emb_in)
    torch.testing.assert_close(emb_in, blob["aux.timestep_embedding"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb, blob["aux.emb"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, blob["output"], atol=1e-5, rtol=1e-5)


def test_batch_split_and_fractional_timesteps(tmp_path):
    model, _, blob = _load_vector_model("improved_diffusion_small", tmp_path)
    x, t = blob["input.x"], blob["input.t"]
    assert t.dtype == torch.float32 and t[0] == 3.25  # fractional t (rescaled cosine steps) must not be rounded
    with torch.no_grad():
        one = model(x[1:], t[1:])
        rounded = model(x, t.round())
    torch.testing.assert_close(one, blob["output"][1:], atol=1e-5, rtol=1e-5)
    assert (rounded - blob["output"]).abs().max() > 1e-3


def test_dropout_is_off_in_eval_and_on_in_train(tmp_path):
    model, _, blob = _load_vector_model("improved_diffusion_small", tmp_path)  # dropout 0.3
    x, t = blob["input.x"], blob["input.t"]
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), model(x, t), atol=0, rtol=0)
        model.train()
        assert (model(x, t) - blob["output"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", VECTORS)
def test_sdpa_attention_matches(name, tmp_path):
    """SDPA on contiguous q/k/v: max abs 4.3e-6-4.8e-6 from the reference vectors (CPU, torch 2.14.1)."""
    model, _, blob = _load_vector_model(name, tmp_path)
    fast = prepare_for_inference(model, "cpu", sdpa=True)
    assert all(m.use_sdpa for m in fast.modules() if isinstance(m, AttentionBlock))
    with torch.no_grad():
        out = fast(blob["input.x"], blob["input.t"])
    torch.testing.assert_close(out, blob["output"], atol=1e-5, rtol=1e-5)


# Measured on CPU (torch 2.14, 1 thread) against the fp32 reference outputs (max |y| ~2.3-3.0):
#   precision bf16 (autocast; GroupNorm in one bf16 kernel with float32 statistics, 2026-12-01): max abs
#   error 0.034-0.045, mean abs 0.0057-0.0074 over the three UNet vectors (0.034-0.054 / 0.0054-0.0071
#   with the former float32 cast round trip);
#   channels-last fp32: max abs 4.5e-6.
# Tolerances below are ~4x the measured bf16 errors; channels-last fp32 keeps the 1e-5 fp32 tolerance.
BF16_MAX_ABS, BF16_MEAN_ABS = 0.2, 0.03


@pytest.mark.parametrize("name", VECTORS)
def test_bf16_and_channels_last(name, tmp_path):
    model, _, blob = _load_vector_model(name, tmp_path)
    x, t, ref = blob["input.x"], blob["input.t"], blob["output"]
    with torch.no_grad():
        out_cl = prepare_for_inference(model, "cpu", channels_last=True)(x, t)
        out_bf16 = prepare_for_inference(model, "cpu", channels_last=True, precision="bf16")(x, t)
    torch.testing.assert_close(out_cl, ref, atol=1e-5, rtol=1e-5)
    assert out_bf16.dtype == torch.float32
    error = (out_bf16 - ref).abs()
    assert error.max() < BF16_MAX_ABS and error.mean() < BF16_MEAN_ABS
