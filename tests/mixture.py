"""A cheap analytic denoiser at any image size: an isotropic Gaussian mixture of a few random
components (its cost is a few products with K means, so large images stay fast)."""

import torch

from bench.models.analytic import GaussianMixtureDenoiser


def mixture(shape: tuple[int, ...], components: int = 4, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> GaussianMixtureDenoiser:
    gen = torch.Generator().manual_seed(seed)
    size = torch.Size(shape).numel()
    means = torch.rand(components, size, generator=gen, dtype=torch.float64) * 2 - 1
    name = f"mixture{components}-{'x'.join(map(str, shape))}-seed{seed}"
    return GaussianMixtureDenoiser(name, means, 0.1, shape).to(dtype=dtype)
