"""AMED's predictor: a ~9k-parameter network that places each step's intermediate time.

Inputs: the pooled bottleneck features of the step's first denoiser call, and sinusoidal
embeddings of t_cur and t_next. Outputs per sample: r in (0, 1), giving the intermediate time
t_mid = t_next^r * t_cur^(1-r); a direction scale in [1 - a, 1 + a]; and a time scale in
[1 - b, 1 + b] (the half-widths a and b are settings; 0 turns an output off, fixing it to 1).
The layout, widths, initialisation and output ranges follow the official AMED code
(zju-pi/diff-sampler, amed-solver-main/training/networks.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import silu

# The embedding's largest period, as in EDM's positional embedding.
MAX_POSITIONS = 10_000


def _linear(fan_in: int, fan_out: int, generator: torch.Generator, *, xavier: bool = False):
    """A linear layer with the official initialisation: zero bias; weights N(0, 1/fan_in), or
    Xavier-uniform for the time layer."""
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        if xavier:
            bound = math.sqrt(6 / (fan_in + fan_out))
            layer.weight.copy_((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound)
        else:
            weight = torch.randn(fan_out, fan_in, generator=generator)
            layer.weight.copy_(weight / math.sqrt(fan_in))
        layer.bias.zero_()
    return layer


class Predictor(nn.Module):
    """(features [B, F], t_cur, t_next) -> (r, scale_dir, scale_time), each [B]."""

    def __init__(
        self,
        feature_dim: int,
        *,
        hidden_dim: int = 128,
        feature_out: int = 4,
        time_channels: int = 8,
        scale_dir: float = 0.01,
        scale_time: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if feature_dim < 1 or time_channels < 4 or time_channels % 2:
            raise ValueError("feature_dim must be >= 1 and time_channels an even number >= 4")
        if not (0 <= scale_dir < 1 and 0 <= scale_time < 1):
            raise ValueError("scale_dir and scale_time are half-widths in [0, 1)")
        self.feature_dim = feature_dim
        self.time_channels = time_channels
        self.half_widths = (float(scale_dir), float(scale_time))
        gen = torch.Generator().manual_seed(seed)
        self.time_layer = _linear(time_channels, time_channels, gen, xavier=True)
        self.encode = nn.ModuleList(
            [_linear(feature_dim, hidden_dim, gen), _linear(hidden_dim, feature_out, gen)]
        )
        width = 2 * time_channels + feature_out
        # One head per output; a switched-off scale has none (as in the official code).
        self.heads = nn.ModuleList(
            [_linear(width, 1, gen)]
            + [_linear(width, 1, gen) for half in self.half_widths if half > 0]
        )

    def embed(self, t: float, like: Tensor) -> Tensor:
        """[sin, cos] of t times frequencies from 1 down to 1/MAX_POSITIONS, then a layer."""
        half = self.time_channels // 2
        freqs = MAX_POSITIONS ** -(torch.arange(half, dtype=like.dtype) / (half - 1))
        angles = float(t) * freqs.to(like.device)
        return silu(self.time_layer(torch.cat([angles.sin(), angles.cos()])))

    def forward(self, features: Tensor, t_cur: float, t_next: float) -> tuple[Tensor, ...]:
        batch = features.shape[0]
        times = torch.cat([self.embed(t_cur, features), self.embed(t_next, features)])
        encoded = self.encode[1](silu(self.encode[0](features.reshape(batch, -1))))
        hidden = torch.cat([encoded, times.expand(batch, -1)], dim=1)
        outputs = iter(head(hidden).sigmoid().squeeze(1) for head in self.heads)
        r = next(outputs)
        scales = [
            1 + half * (2 * next(outputs) - 1) if half > 0 else torch.ones_like(r)
            for half in self.half_widths
        ]
        return r, *scales
