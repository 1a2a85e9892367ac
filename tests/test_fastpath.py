"""The fast path of issue #17 on the CPU: precision settings, the folded m loop, sync-free counting,
BatchNorm folding, SDPA, torch.compile with its fallback; every fast option against the reference path."""
import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from diffsmooth.certify import speed_settings
from diffsmooth.models import DigitsEpsMLP, apply_precision, classifier, digits_mlp, prepare_for_inference
from diffsmooth.models.unet import GroupNorm32
from diffsmooth.models.zoo import CompiledModel
from diffsmooth.purifier import OneShotPurifier
from diffsmooth.schedules import Schedule
from diffsmooth.smoothing import Cell, Certifier

torch.set_num_threads(1)
SHAPE = (1, 8, 8)
BASE = dict(dataset="digits", sigma=0.25, N=300, n0=40, alpha=0.001, seed=2)


def _digits_models(seed=7, width=48):
    torch.manual_seed(seed)
    clfs = {name: digits_mlp(width=width).eval() for name in ("a", "b")}
    return clfs, DigitsEpsMLP(width=width, blocks=1).eval()


def _cells():
    return [Cell(method="rs", classifier="a", **BASE),
            Cell(method="dds", classifier="b", **BASE),
            Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=6, **BASE),
            Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=2, **BASE),
            Cell(method="local", classifier="b", sigma_local=0.25, m=3, local_noise="fresh", **BASE)]


def _certifier(config_certify: dict, batch_size=100, **kwargs):
    clfs, eps = _digits_models()
    clfs = {k: speed_settings(v, "cpu", **config_certify) for k, v in clfs.items()}
    purifier = OneShotPurifier(speed_settings(eps, "cpu", **config_certify), Schedule("linear", 1000), 0.25)
    return Certifier(_cells(), clfs, purifier, 10, SHAPE, batch_size=batch_size, **kwargs)


def _per_sample_labels(cert, images=range(3), n=400):
    """Labels of every (head, m) on n noisy samples per image: the votes before counting."""
    out = {}
    for i in images:
        x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(40 + i))
        x_rs = x[None] + 0.25 * torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(i))
        local = torch.randn((n, cert.max_m, *SHAPE), generator=torch.Generator().manual_seed(99 + i))
        wanted = {}
        for c in cert.cells:
            wanted.setdefault(c.head, set()).add(c.m)
        with torch.inference_mode():
            labels, bad = cert._labels(x_rs, wanted, local)
        assert not bad
        for key, v in labels.items():
            out[(i, key)] = v
    return out


@pytest.fixture(autouse=True)
def _restore_precision():
    yield
    apply_precision("fp32")


# --- precision ------------------------------------------------------------------------------------

def test_precision_sets_torch_float32_arithmetic():
    apply_precision("tf32")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high"
    apply_precision("fp32")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(ValueError, match="fp32.*tf32.*bf16"):
        apply_precision("fp16")


def test_fp32_without_compile_is_the_reference_model():
    model = digits_mlp(width=8)
    assert speed_settings(model, "cpu", precision="fp32", compile=False) is model


def test_schema_takes_precision_and_compile_and_refuses_autocast():
    import yaml

    from diffsmooth.grid import validate_config

    cfg = yaml.safe_load(open("config/config.yaml"))
    assert cfg["certify"]["precision"] == "fp32" and cfg["certify"]["compile"] is False
    for bad in ({"precision": "fp16"}, {"autocast": "bf16"}, {"compile": "yes"}):
        broken = copy.deepcopy(cfg)
        broken["certify"].update(bad)
        with pytest.raises(Exception, match="precision|autocast|compile|fp16|yes"):
            validate_config(broken)


# --- the folded m loop and the counts ---------------------------------------------------------------

@pytest.mark.parametrize("classifier_batch_size", [1, 150, 10_000])
def test_folded_local_draws_give_the_per_draw_labels(classifier_batch_size):
    """classifier_batch_size 1 is one forward per draw (the reference loop); larger folds draws together."""
    ref = _per_sample_labels(_certifier({}, classifier_batch_size=1))
    out = _per_sample_labels(_certifier({}, classifier_batch_size=classifier_batch_size))
    assert ref.keys() == out.keys()
    for k in ref:
        assert torch.equal(ref[k], out[k]), k


class _SyncCounter:
    """Counts the calls that synchronise a CUDA stream with the host (or that the old code used)."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))
        original_bincount = torch.bincount
        monkeypatch.setattr(torch, "bincount", self._wrap("bincount", original_bincount))

    def _wrap(self, name, original):
        def wrapper(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)
        return wrapper


def test_the_per_batch_loop_makes_no_host_synchronisation(monkeypatch):
    """One sync per phase (the NaN check), whatever the number of batches: none in the per-batch loop."""
    cert = _certifier({}, batch_size=25)
    x = torch.rand(SHAPE)
    counter = _SyncCounter(monkeypatch)
    with torch.inference_mode():
        one_batch = cert._counts(x, 0, "estimation", {c: 25 for c in cert.cells})
        calls_one = list(counter.calls)
        counter.calls.clear()
        many = cert._counts(x, 0, "estimation", {c: c.N for c in cert.cells})  # 12 batches
        calls_many = list(counter.calls)
    assert calls_one == calls_many == ["__bool__"], (calls_one, calls_many)
    assert all(int(v.sum()) == c.N for c, v in many.items()) and all(int(v.sum()) == 25 for v in one_batch.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: torch.cuda.set_sync_debug_mode")
def test_no_cuda_sync_in_the_per_batch_loop():  # pragma: no cover - GPU machines
    clfs, eps = _digits_models()
    clfs = {k: v.cuda() for k, v in clfs.items()}
    purifier = OneShotPurifier(eps.cuda(), Schedule("linear", 1000), 0.25)
    cert = Certifier(_cells(), clfs, purifier, 10, SHAPE, batch_size=25, device="cuda")
    x = torch.rand(SHAPE, device="cuda")
    limits = {c: c.N for c in cert.cells}
    with torch.inference_mode():
        cert._counts(x, 0, "estimation", limits)  # warm-up
        torch.cuda.synchronize()
        original = cert._labels

        def checked(*args):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return original(*args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        cert._labels = checked
        cert._counts(x, 0, "estimation", limits)


# --- fast options against the reference, fp32 -------------------------------------------------------

def test_compiled_models_give_the_reference_labels():
    ref = _per_sample_labels(_certifier({}))
    fast = _certifier({"compile": True})
    assert all(isinstance(m, CompiledModel) for m in fast.classifiers.values())
    out = _per_sample_labels(fast)
    assert all(m.failed is None for m in fast.classifiers.values())
    for k in ref:
        assert torch.equal(ref[k], out[k]), k


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(module, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor: no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = digits_mlp(width=8).eval()
    wrapped = prepare_for_inference(copy.deepcopy(model), "cpu", compile=True)
    x = torch.rand(5, *SHAPE)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler.*eagerly"):
        out = wrapped(x)
    assert torch.equal(out, model(x)) and "RuntimeError" in wrapped.failed
    assert torch.equal(wrapped(x), out)  # later calls: eager, no second warning needed


def _resnet20():
    blob = load_file("tests/data/models/cohen_cifar_resnet20.safetensors")
    model = classifier("cifar_resnet20", "cifar10")
    model.load_state_dict({k[len("model."):]: v for k, v in blob.items() if k.startswith("model.")})
    return model.eval(), blob


def test_batchnorm_folding_matches_the_reference_vector_and_labels():
    model, blob = _resnet20()
    folded = prepare_for_inference(copy.deepcopy(model), "cpu", fold_batchnorm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 3, 32, 32, generator=g)[:, None] + 0.5 * torch.randn(4, 40, 3, 32, 32, generator=g)).flatten(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(folded(blob["input.x"]), blob["output"], atol=1e-5, rtol=1e-5)
        ref, out = model(x), folded(x)
    assert torch.equal(ref.argmax(1), out.argmax(1))
    with pytest.raises(RuntimeError, match="eval mode"):
        classifier("cifar_resnet20", "cifar10")[1].train().fold_batchnorm()


# --- bf16 -------------------------------------------------------------------------------------------

# Measured on CPU (torch 2.14.1, 1 thread, 2026-12-01), 3 images x 400 noisy samples of the digits test
# models with bf16 purifier and classifiers (random weights, so many near-ties between classes; a trained
# model's larger margins agree more): bf16 votes agree with fp32 on 98.75-99.75% of the samples per
# (image, head, m), 99.45% overall. Thresholds leave room for other CPUs' bf16 kernels.
BF16_MIN_AGREEMENT, BF16_MIN_AGREEMENT_OVERALL = 0.97, 0.98


def test_bf16_label_agreement_rate():
    ref = _per_sample_labels(_certifier({}))
    out = _per_sample_labels(_certifier({"precision": "bf16"}))
    rates = {k: (ref[k] == out[k]).float().mean().item() for k in ref}
    print("bf16 agreement per (image, head, m):", sorted(rates.values()))
    overall = sum(int((ref[k] == out[k]).sum()) for k in ref) / sum(len(ref[k]) for k in ref)
    assert min(rates.values()) >= BF16_MIN_AGREEMENT, rates
    print(f"bf16 agreement overall: {overall:.4f}")
    assert overall >= BF16_MIN_AGREEMENT_OVERALL, overall


def test_groupnorm32_casts_only_reduced_precision_inputs():
    torch.manual_seed(0)
    gn = GroupNorm32(8, 32)
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    x = torch.randn(4, 32, 8, 8) * 3 + 1
    assert torch.equal(gn(x), nn.GroupNorm.forward(gn, x))  # fp32: plain GroupNorm
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gn(xb)
    old = nn.GroupNorm.forward(gn, xb.float()).bfloat16()  # the reference: float32 and back
    assert out.dtype == torch.bfloat16
    # one bf16 rounding of the affine step apart at most: 2 ulps of bf16 (2 * 2**-8 relative)
    assert ((out.float() - old.float()).abs() <= 2 ** -7 * old.float().abs() + 1e-2).all()
