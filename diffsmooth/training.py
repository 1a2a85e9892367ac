"""Training for the embedded default: a digits eps-model (DDPM, linear 1000-step schedule) and
smoothed classifiers (Gaussian augmentation, Cohen et al.; SmoothAdv, Salman et al.).

Checkpoints use the reference dict format ({'arch', 'state_dict', 'epoch', 'optimizer', ...}) so
they load through the same code path as the paper's public checkpoints.
"""
from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .models.digits import DigitsEpsMLP, digits_mlp
from .rows import atomic_write_bytes
from .schedules import Schedule


def _load_split(data_dir, split):
    with np.load(Path(data_dir) / f"{split}.npz") as z:
        return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])


def _save(path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def digits_eps_kwargs(width: int = 256, blocks: int = 2, channels: int = 1, **_training) -> dict:
    """DigitsEpsMLP arguments from the `diffusion: train:` settings (the other training keys are ignored)."""
    return dict(width=width, blocks=blocks, emb_dim=128, channels=channels)


def train_diffusion(data_dir, out_path, sigmas, iters: int = 4000, batch_size: int = 256, lr: float = 1e-3,
                    width: int = 256, blocks: int = 2, seed: int = 0, schedule: Schedule | None = None,
                    progress: bool = True) -> dict:
    """Train eps_theta on t < ceil(1.25 t*(max sigma)): only the t* values are ever used by purification."""
    schedule = schedule or Schedule("linear", 1000)
    torch.manual_seed(seed)
    x_train, _ = _load_split(data_dir, "train")
    x_train = 2 * x_train - 1  # the diffusion model works in [-1, 1]
    t_max = min(schedule.num_timesteps, math.ceil(1.25 * schedule.t_star(max(sigmas))) + 1)
    abar = torch.tensor(schedule.alphas_cumprod, dtype=torch.float32)
    kwargs = digits_eps_kwargs(width, blocks, channels=x_train.shape[1])
    model = DigitsEpsMLP(**kwargs)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_cosine(s, iters, 100))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(iters), desc="train diffusion", disable=not progress, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(len(x_train), (batch_size,), generator=gen)
        x0 = x_train[idx]
        t = torch.randint(t_max, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        loss = nn.functional.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t.float()), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 0.001)  # EMA 0.999
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    ema.eval()
    report = {"iters": iters, "t_max": t_max, "params": sum(p.numel() for p in ema.parameters()),
              "denoise_mse": denoising_mse(ema, data_dir, sigmas, schedule, seed)}
    _save(out_path, {"arch": "digits_eps_mlp", "kwargs": kwargs, "state_dict": ema.state_dict(),
                     "epoch": iters, "train": report})
    return report


@torch.no_grad()
def denoising_mse(eps_model, data_dir, sigmas, schedule: Schedule, seed: int = 0, draws: int = 4) -> dict:
    """Per-pixel MSE against the clean test images: noisy x + sigma z vs. one-shot purified, per sigma."""
    from .purifier import OneShotPurifier

    x, _ = _load_split(data_dir, "test")
    gen = torch.Generator().manual_seed(seed + 1)
    out = {}
    for sigma in sigmas:
        purifier = OneShotPurifier(eps_model, schedule, sigma)
        noisy, denoised = 0.0, 0.0
        for _ in range(draws):
            x_rs = x + sigma * torch.randn(x.shape, generator=gen)
            noisy += nn.functional.mse_loss(x_rs, x).item() / draws
            denoised += nn.functional.mse_loss(purifier(x_rs), x).item() / draws
        out[f"{sigma:g}"] = {"t_star": purifier.t_star, "noisy_mse": noisy, "denoised_mse": denoised}
    return out


def _smoothadv_perturb(model, x, y, sigma, eps, steps, m, gen):
    """PGD (l2) on the soft smoothed classifier: maximise -log mean_j softmax(F(x + delta + sigma z_j))_y."""
    noise = sigma * torch.randn((m, *x.shape), generator=gen)
    delta = torch.zeros_like(x, requires_grad=True)
    step = 2 * eps / steps
    for _ in range(steps):
        probs = torch.stack([torch.softmax(model(x + delta + noise[j]), 1) for j in range(m)]).mean(0)
        loss = nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y)
        grad, = torch.autograd.grad(loss, delta)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = (delta + step * grad / norm).detach()
        dnorm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = (delta * torch.clamp(eps / dnorm.clamp_min(1e-12), max=1.0)).requires_grad_(True)
    return (x + delta).detach(), noise


def train_classifier(data_dir, out_path, sigma: float, method: str = "gaussian", epochs: int = 80,
                     batch_size: int = 128, lr: float = 2e-3, width: int = 256, seed: int = 0,
                     smoothadv: dict | None = None, progress: bool = True) -> dict:
    """Gaussian augmentation at `sigma` (Cohen et al.), or SmoothAdv (PGD on the smoothed classifier)."""
    if method not in ("gaussian", "smoothadv"):
        raise ValueError(f"unknown training method {method!r}: use 'gaussian' or 'smoothadv'")
    if method == "smoothadv" and sigma <= 0:
        raise ValueError("SmoothAdv trains a smoothed classifier: sigma must be > 0")
    adv = {"eps": 0.5, "steps": 2, "m": 2, "warmup_epochs": 5, **(smoothadv or {})}
    torch.manual_seed(seed)
    x, y = _load_split(data_dir, "train")
    model = digits_mlp(width=width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc=f"train {method} sigma={sigma:g}", disable=not progress, mininterval=1.0)
    for epoch in bar:
        perm = torch.randperm(len(x), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if method == "smoothadv":
                eps = adv["eps"] * min(1.0, (epoch + 1) / adv["warmup_epochs"])
                model.eval()
                x_adv, noise = _smoothadv_perturb(model, xb, yb, sigma, eps, adv["steps"], adv["m"], gen)
                model.train()
                inputs = (x_adv.unsqueeze(0) + noise).flatten(0, 1)
                targets = yb.repeat(adv["m"])
            else:
                inputs = xb + sigma * torch.randn(xb.shape, generator=gen)
                targets = yb
            loss = nn.functional.cross_entropy(model(inputs), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    report = {"method": method, "sigma": sigma, "epochs": epochs, **evaluate_classifier(model, data_dir, sigma, seed)}
    if method == "smoothadv":
        report["smoothadv"] = adv
    _save(out_path, {"arch": "digits_mlp", "state_dict": model.state_dict(), "epoch": epochs,
                     "optimizer": opt.state_dict(), "train": report})
    return report


@torch.no_grad()
def evaluate_classifier(model, data_dir, sigma: float, seed: int = 0) -> dict:
    x, y = _load_split(data_dir, "test")
    gen = torch.Generator().manual_seed(seed + 2)
    clean = (model(x).argmax(1) == y).float().mean().item()
    noisy = (model(x + sigma * torch.randn(x.shape, generator=gen)).argmax(1) == y).float().mean().item()
    return {"clean_accuracy": clean, "noisy_accuracy": noisy}
