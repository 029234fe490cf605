"""What AMED's predictor sees of the state: pooled bottleneck features, or a stated stand-in.

A features callable maps (x, sigma) to [B, F] features. AMED calls it right after the step's
first denoiser call D(x, sigma), so a callable that reads a forward hook on a network's bottleneck
(bench.models.bottleneck) returns what that call computed, at no extra network evaluation.

The official code pools the bottleneck (an 8x8 map on CIFAR-10 and the 256 px models) by the mean
over channels, giving 64 numbers: ``pool_map`` does that, after average-pooling larger maps down
to 8x8.

Analytic denoisers have no bottleneck. ``pooled_input`` is this project's stand-in, a variant and
not the official input: the network-scaled input x / sqrt(1 + sigma^2), pooled like a bottleneck
for images ([B, C, H, W] -> 64 numbers), and the scaled input itself for flat data (gmm2d's 2-d
points).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.functional import adaptive_avg_pool2d

Features = Callable[[Tensor, Tensor], Tensor]
POOLED_SIZE = 8


def pool_map(h: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, 64]: average-pooled to 8x8 (a no-op on an 8x8 map), mean over C."""
    if h.shape[-2:] != (POOLED_SIZE, POOLED_SIZE):
        h = adaptive_avg_pool2d(h, POOLED_SIZE)
    return h.mean(dim=1).flatten(1)


def pooled_input(x: Tensor, sigma: Tensor) -> Tensor:
    """The stand-in for analytic denoisers (see the module docstring)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    scaled = x / (1 + sigma.reshape(-1, *[1] * (x.dim() - 1)) ** 2).sqrt()
    return pool_map(scaled) if x.dim() == 4 else scaled.flatten(1)


pooled_input.name = "pooled-input"


def resolve(denoiser, features: Features | None) -> Features:
    """``features``, else the denoiser's own ``amed_features``, else the stand-in."""
    if features is not None:
        return features
    return getattr(denoiser, "amed_features", None) or pooled_input


def name_of(features: Features) -> str:
    """How an artifact records the feature source."""
    return str(getattr(features, "name", getattr(features, "__name__", type(features).__name__)))
