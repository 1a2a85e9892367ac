"""The ADM UNet of improved-diffusion / guided-diffusion, written to load their public checkpoints exactly.

One implementation covers both families:
  * improved-diffusion (`cifar10_uncond_50M_500K.pt`): conv Downsample/Upsample, a fixed `num_heads`;
  * guided-diffusion (`256x256_diffusion_uncond.pt`): `num_head_channels`, `resblock_updown` (ResBlocks
    that resample with parameter-free avg-pool / nearest upsampling).

Module names, registration order and shapes follow the reference so `load_state_dict(strict=True)`
works on the released files. Numerics follow the reference op order: [cos, sin] time embedding,
`norm(h) * (1 + scale) + shift`, GroupNorm(32) and attention softmax in float32, legacy per-head
(q, k, v) channel grouping. The network is fully convolutional (224x224 inputs work with the 256 flags).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

# channel_mult the reference `create_model` derives from image_size when the flag is empty.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}
NUM_IMAGENET_CLASSES = 1000  # class_cond=True in the reference scripts means 1000 ImageNet classes


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: cat([cos, sin]), zero-padded if dim is odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics whatever the activation dtype (as the reference does under fp16).

    float32 input: plain GroupNorm, no cast. Reduced-precision input (bf16 autocast): one group_norm in
    the activation dtype with autocast off; torch's CPU and CUDA kernels accumulate the mean and variance
    of bf16/fp16 inputs in float32, so this is the reference's float32-and-back in one kernel instead of
    a cast, a float32 GroupNorm and a cast back (tests/test_models_unet.py bounds the difference)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class TimestepBlock(nn.Module):
    """A module whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the embedding to the children that want it (ResBlocks)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2, then (optionally) a 3x3 conv. The conv is the `conv` key of the checkpoints."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 conv (key `op`), or 2x2 average pooling without parameters."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.channels = channels
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling (guided `resblock_updown`)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        # Parameter-free resampling of both the hidden path and the skip path.
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # norm + SiLU, resample, then conv (the reference order).
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)  # scale first
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_sdpa: bool) -> torch.Tensor:
    """q, k, v: [B*heads, head_dim, T] -> [B*heads, head_dim, T]."""
    head_dim = q.shape[1]
    if use_sdpa:
        # Same maths, fused kernel; order of fp32 operations differs (<~4e-6 on the test vectors).
        # [B*heads, T, head_dim] made contiguous: a last-dimension stride of T would make SDPA pick its
        # math fallback instead of the flash / memory-efficient kernels on CUDA.
        q, k, v = (part.transpose(1, 2).contiguous() for part in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    scale = 1 / math.sqrt(math.sqrt(head_dim))  # applied to q and k separately, as the reference does
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


class AttentionBlock(nn.Module):
    """Spatial self-attention. qkv is a 1x1 Conv1d; `legacy_order` groups its output channels per head
    as (q_h, k_h, v_h) -- the layout of both public checkpoints."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, legacy_order: bool = True):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.legacy_order = legacy_order
        self.use_sdpa = False  # switched on by prepare_for_inference(..., sdpa=True)
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[-1]
        heads = self.num_heads
        if self.legacy_order:
            q, k, v = qkv.reshape(b * heads, 3 * c // heads, length).chunk(3, dim=1)
        else:
            q, k, v = (part.reshape(b * heads, c // heads, length) for part in qkv.chunk(3, dim=1))
        h = _attention(q, k, v, self.use_sdpa).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """ADM UNet. Arguments are the reference constructor's; `attention_resolutions` holds downsample
    rates (image_size // pixel_resolution). `use_fp16` and `use_checkpoint` change no weight and are
    accepted for compatibility only (use prepare_for_inference for reduced precision)."""

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        image_size: int | None = None,
    ):
        super().__init__()
        if dims != 2:
            raise ValueError(f"only 2-D UNets are supported (dims={dims})")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_resolutions = set(int(a) for a in attention_resolutions)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.use_fp16 = use_fp16

        def res_block(ch_in, ch_out, **kw):
            return ResBlock(ch_in, time_embed_dim, dropout, out_channels=ch_out,
                            use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attention(ch, heads):
            return AttentionBlock(ch, num_heads=heads, num_head_channels=num_head_channels,
                                  legacy_order=not use_new_attention_order)

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res_block(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W] (H, W divisible by 2**(levels-1)); timesteps: float or int tensor of shape [B]."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


# ---------------------------------------------------------------------------------------------------
# Reference flag dictionaries (script_util.model_and_diffusion_defaults + README flags) -> networks

def _flag_bool(value) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no", ""):
            return False
        raise ValueError(f"not a boolean flag value: {value!r}")
    return bool(value)


def _int_list(value) -> list[int]:
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    return [int(v) for v in value]


def unet_kwargs_from_flags(flags: Mapping) -> dict:
    """Resolve a reference flag dict into UNetModel constructor arguments (diffusion-only flags ignored)."""
    required = ("image_size", "num_channels", "num_res_blocks")
    missing = [k for k in required if k not in flags]
    if missing:
        raise ValueError(f"UNet flags lack {missing}; a flag dict needs at least {list(required)}")
    image_size = int(flags["image_size"])
    channel_mult = flags.get("channel_mult", "")
    if channel_mult in ("", None) or (not isinstance(channel_mult, str) and len(channel_mult) == 0):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}: "
                             f"give channel_mult or use one of {sorted(DEFAULT_CHANNEL_MULT)}")
        channel_mult = DEFAULT_CHANNEL_MULT[image_size]
    elif isinstance(channel_mult, str):
        channel_mult = tuple(float(m) if "." in m else int(m) for m in channel_mult.split(",") if m.strip())
    else:
        channel_mult = tuple(channel_mult)
    # Pixel resolutions -> downsample rates, as create_model does.
    attention_ds = [image_size // res for res in _int_list(flags.get("attention_resolutions", "16,8"))]
    num_head_channels = flags.get("num_head_channels", -1)
    return dict(
        image_size=image_size,
        in_channels=3,
        model_channels=int(flags["num_channels"]),
        out_channels=6 if _flag_bool(flags.get("learn_sigma", False)) else 3,
        num_res_blocks=int(flags["num_res_blocks"]),
        attention_resolutions=tuple(attention_ds),
        dropout=float(flags.get("dropout", 0.0)),
        channel_mult=channel_mult,
        num_classes=NUM_IMAGENET_CLASSES if _flag_bool(flags.get("class_cond", False)) else None,
        use_checkpoint=_flag_bool(flags.get("use_checkpoint", False)),
        use_fp16=_flag_bool(flags.get("use_fp16", False)),
        num_heads=int(flags.get("num_heads", 4)),
        num_head_channels=-1 if num_head_channels is None else int(num_head_channels),
        num_heads_upsample=int(flags.get("num_heads_upsample", -1)),
        use_scale_shift_norm=_flag_bool(flags.get("use_scale_shift_norm", True)),
        resblock_updown=_flag_bool(flags.get("resblock_updown", False)),
        use_new_attention_order=_flag_bool(flags.get("use_new_attention_order", False)),
    )


def unet_from_flags(flags: Mapping) -> UNetModel:
    """Build the UNet a reference flag dict describes (e.g. the `flags` of a manifest or config)."""
    return UNetModel(**unet_kwargs_from_flags(flags))


def diffusion_settings_from_flags(flags: Mapping) -> dict:
    """The diffusion-side facts of a flag dict.

    `rescale_timesteps` must be given: its default differs between the families (improved-diffusion
    True, guided-diffusion False), and getting it wrong feeds the CIFAR-10 UNet t instead of t/4.
    The other absent flags take the (shared) reference defaults: linear, 1000 steps, learn_sigma False.
    """
    if "rescale_timesteps" not in flags:
        raise ValueError("flags lack 'rescale_timesteps': set it explicitly (True for improved-diffusion's "
                         "cifar10_uncond_50M_500K.pt, False for guided-diffusion's 256x256_diffusion_uncond.pt)")
    schedule = flags.get("noise_schedule", "linear")
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"unknown noise_schedule {schedule!r}: use 'linear' or 'cosine'")
    return dict(
        schedule=schedule,
        num_timesteps=int(flags.get("diffusion_steps", 1000)),
        rescale_timesteps=_flag_bool(flags["rescale_timesteps"]),
        learn_sigma=_flag_bool(flags.get("learn_sigma", False)),
    )
