"""The EDM-trained UNet of OpenAI's consistency_models release, with its checkpoint's key names.

OpenAI published EDM denoisers (e.g. ``edm_bedroom256_ema.pt``) as plain state dicts of
``cm.unet.UNetModel`` (the ADM UNet of guided-diffusion), preconditioned by
``cm.karras_diffusion.KarrasDenoiser.denoise``. This module rebuilds that network from the same
``create_model`` flags, so ``load_state_dict`` takes the released files unchanged, and wraps it
in the preconditioning so it answers like an EDM network: ``net(x, sigma, class_labels)``.

Written here rather than taken from diffusers (``UNet2DModel`` plus a key map) because the core
install carries no diffusers and the key names are then the checkpoint's own, so a missing or
mis-shaped key names exactly what the file lacks. Sampling only: no dropout, no gradient
checkpointing.

Facts carried over from the public code (cm/unet.py, cm/nn.py, cm/karras_diffusion.py):

* Attention: the checkpoints were trained on the flash-attention path, whose qkv 1x1 convolution
  lays its 3C output channels out as (three, heads, head_dim) and whose softmax scale is
  1/sqrt(head_dim). (The file's legacy path splits heads first, (heads, three, head_dim); loading
  these weights with that layout runs and gives garbage.)
* GroupNorm with 32 groups (computed in float32 in a half-precision network); SiLU everywhere;
  the sinusoidal time embedding is [cos, sin] of t * 10000^(-i/half) for i < half.
* Preconditioning: sigma_data 0.5, c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2),
  c_in = 1 / sqrt(s^2 + sd^2), network time input 1000 * 0.25 * log(s + 1e-44).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIGMA_DATA = 0.5
# KarrasDenoiser.denoise feeds the UNet 1000 * 0.25 * log(sigma + 1e-44).
TIME_SCALE = 1000 * 0.25
LOG_EPS = 1e-44
GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in its parameters' precision (float32 in a half-precision network, as
    cm.nn.GroupNorm32), returned in the input's."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.to(self.weight.dtype)).type(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(GROUPS, channels)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos, sin] of the (fractional) times ``t`` ([B]), in float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _resample(x: Tensor, how: str | None) -> Tensor:
    if how == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if how == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    return x


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding, optionally resampling (up or down)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = resample
        self.in_layers = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        # Index 2 is dropout in training (a no-op when sampling); keeping the slot keeps the
        # checkpoint's name out_layers.3 for the convolution.
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # Resampling sits between the input normalisation and the first convolution.
        h = self.in_layers[:-1](x)
        h = self.in_layers[-1](_resample(h, self.resample))
        x = _resample(x, self.resample)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def attention_heads(qkv: Tensor, num_heads: int) -> Tensor:
    """Multi-head self-attention of a flash-layout qkv tensor.

    ``qkv``: [B, 3 * heads * head_dim, S] with channels ordered (three, heads, head_dim), as the
    flash path of cm/unet.py reads them ("b (three h d) s"). Returns [B, heads * head_dim, S],
    channels ordered (heads, head_dim); the softmax scale is 1/sqrt(head_dim).
    """
    batch, width, length = qkv.shape
    head_dim = width // (3 * num_heads)
    q, k, v = qkv.reshape(batch, 3, num_heads, head_dim, length).transpose(-1, -2).unbind(1)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(-1, -2).reshape(batch, num_heads * head_dim, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (cm.unet.AttentionBlock, flash path)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1) -> None:
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(
                    f"{channels} channels are not divisible by num_head_channels "
                    f"{num_head_channels}"
                )
            num_heads = channels // num_head_channels
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3 * channels, height * width)
        h = attention_heads(qkv, self.num_heads).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Strided 3x3 convolution (the down path without resblock_updown)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (the up path without resblock_updown)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_resample(x, "up"))


class TimestepSequential(nn.Sequential):
    """Layers applied in turn; residual blocks also get the time embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """The ADM UNet of cm/unet.py for 2-D images, sampling only (no learn_sigma).

    ``attention_ds``: the downsampling factors (image_size // resolution) that get attention;
    ``num_classes``: class-conditional with an embedding table of that size, else None.
    """

    def __init__(
        self,
        image_size: int,
        model_channels: int,
        num_res_blocks: int,
        attention_ds: Sequence[int],
        channel_mult: Sequence[int],
        num_classes: int | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.num_classes = num_classes
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(ch_in: int, ch_out: int | None = None, resample: str | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, use_scale_shift_norm, resample)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_heads, num_head_channels)

        ch = int(channel_mult[0] * model_channels)
        first = ch
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, "down") if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skips.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch), attention(ch), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, "up") if resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            _norm(ch), nn.SiLU(), nn.Conv2d(first, out_channels, 3, padding=1)
        )

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        """``x`` [B, C, H, W], ``timesteps`` [B] (network time), ``y`` [B] class indices."""
        emb = self.time_embed(
            timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype)
        )
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h = x.to(self.input_blocks[0][0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


class KarrasPrecond(nn.Module):
    """A UNet behind KarrasDenoiser.denoise's preconditioning, called like an EDM network:
    ``net(x, sigma, class_labels)``.

    Carries the attributes pasbench's EDM wrapper reads (img_resolution, img_channels, label_dim,
    sigma_min, sigma_max). The preconditioning runs in the dtype of ``x``; class labels arrive
    one-hot (pasbench's convention) and become the indices the UNet embeds.
    """

    def __init__(
        self, model: UNetModel, sigma_min: float = 0.002, sigma_max: float = 80.0
    ) -> None:
        super().__init__()
        self.model = model
        self.img_resolution = model.image_size
        self.img_channels = model.in_channels
        self.label_dim = model.num_classes or 0
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = SIGMA_DATA

    def forward(
        self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None
    ) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        total = sigma**2 + self.sigma_data**2
        c_skip = self.sigma_data**2 / total
        c_out = sigma * self.sigma_data / total.sqrt()
        c_in = 1 / total.sqrt()
        c_noise = TIME_SCALE * torch.log(sigma + LOG_EPS)
        labels = None
        if self.label_dim:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels")
            labels = class_labels.reshape(-1, self.label_dim).argmax(dim=1)
        out = self.model(c_in * x, c_noise.flatten(), labels)
        return c_skip * x + c_out * out.to(x.dtype)
