"""Embedded analytic datasets: isotropic Gaussian mixtures whose EDM denoiser is exact.

With data y ~ sum_k w_k N(mu_k, s^2 I) and x = y + sigma * n, the posterior mean is

    D(x, sigma) = s^2/(s^2+sigma^2) x + sigma^2/(s^2+sigma^2) sum_k p(k | x) mu_k,
    log p(k | x) = log w_k + (<x, mu_k> - |mu_k|^2 / 2) / (s^2+sigma^2) + const(x),

so one call costs two matrix products and a softmax over components; no
batch x components x dimensions tensor is ever formed.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from bench.models.spec import DatasetSpec

DIGITS_STD = 0.05


class GaussianMixtureDenoiser:
    """Exact denoiser of an isotropic Gaussian mixture, in the EDM convention."""

    label_dim = 0

    def __init__(
        self,
        name: str,
        means: Tensor,
        std: float,
        shape: tuple[int, ...],
        weights: Tensor | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        factors: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.name = name
        self.shape = tuple(shape)
        self.std = float(std)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.means = means.reshape(means.shape[0], -1)
        num = self.means.shape[0]
        if weights is None:
            weights = torch.full((num,), 1.0 / num, dtype=self.means.dtype)
        self.weights = weights.to(self.means)
        self._log_weights = self.weights.log()
        self._half_sq_norms = 0.5 * (self.means * self.means).sum(dim=1)
        # Optional means = coords @ lift.T with few coordinates (digits32: each digit's 64 pixels
        # lifted by the linear upsampling): both products then cost O(r (D + K)), not O(D K).
        self.factors = None if factors is None else tuple(f.to(self.means) for f in factors)

    def __call__(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        var = self.std**2 + sigma**2
        if self.factors is None:
            dots = flat @ self.means.T
        else:
            coords, lift = self.factors
            dots = (flat @ lift) @ coords.T
        posterior = torch.softmax((dots - self._half_sq_norms) / var + self._log_weights, dim=1)
        posterior_mean = posterior @ self.means if self.factors is None else (posterior @ coords) @ lift.T
        shrink = self.std**2 / var
        return (shrink * flat + (1 - shrink) * posterior_mean).reshape(x.shape)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy of this denoiser whose parameters live on ``device`` in ``dtype``."""
        return GaussianMixtureDenoiser(
            self.name,
            self.means.to(device=device, dtype=dtype),
            self.std,
            self.shape,
            self.weights.to(device=device, dtype=dtype),
            self.sigma_min,
            self.sigma_max,
            None if self.factors is None else tuple(f.to(device=device, dtype=dtype) for f in self.factors),
        )

    def data_mean(self) -> Tensor:
        """Exact mean of the data distribution, flattened, float64."""
        return self.weights.double() @ self.means.double()

    def data_cov(self) -> Tensor:
        """Exact covariance of the data distribution, flattened, float64."""
        centred = self.means.double() - self.data_mean()
        cov = (centred.T * self.weights.double()) @ centred
        return cov + self.std**2 * torch.eye(cov.shape[0], dtype=torch.float64, device=cov.device)


def ring_means(count: int = 8, radius: float = 1.0) -> Tensor:
    """Centres of ``count`` equal Gaussians spaced evenly on a circle."""
    angles = torch.arange(count, dtype=torch.float64) * (2 * math.pi / count)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


@lru_cache(maxsize=1)
def digit_images() -> Tensor:
    """scikit-learn's 1,797 bundled 8x8 digits scaled to [-1, 1], shape [1797, 1, 8, 8], float64."""
    from sklearn.datasets import load_digits

    pixels = torch.from_numpy(load_digits().images.astype(np.float64))
    return (pixels / 8.0 - 1.0).unsqueeze(1)


def upsample_32(images: Tensor) -> Tensor:
    """[N, 1, 8, 8] -> [N, 3, 32, 32]: bilinear upsampling, the channel repeated (a linear map)."""
    up = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    return up.expand(-1, 3, -1, -1).contiguous()


def digit_images_32() -> Tensor:
    """The digits upsampled bilinearly to 3x32x32 (a convex combination, so still in [-1, 1])."""
    return upsample_32(digit_images())


def _mixture(name: str) -> GaussianMixtureDenoiser:
    if name == "gmm2d":
        return GaussianMixtureDenoiser("gmm2d", ring_means(), 0.1, (2,))
    if name == "digits":
        return GaussianMixtureDenoiser(name, digit_images(), DIGITS_STD, (1, 8, 8))
    # The upsampling of the 64 unit images is the lift matrix of the factored means.
    lift = upsample_32(torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)).reshape(64, -1).T
    factors = (digit_images().reshape(-1, 64), lift)
    return GaussianMixtureDenoiser(name, digit_images_32(), DIGITS_STD, (3, 32, 32), factors=factors)


def _spec(name: str, shape: tuple[int, ...], thresholding: bool, samples: int, batch_size: int,
          description: str):
    def build(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, **_):
        return _mixture(name).to(device=device, dtype=dtype)

    def exact_stats() -> tuple[np.ndarray, np.ndarray]:
        mixture = _mixture(name)
        return mixture.data_mean().numpy(), mixture.data_cov().numpy()

    return DatasetSpec(
        name=name,
        shape=shape,
        metric="fd",
        build=build,
        default_num_samples=samples,
        default_batch_size=batch_size,
        thresholding=thresholding,
        description=description,
        exact_stats=exact_stats,
    )


ANALYTIC_SPECS = [
    _spec("gmm2d", (2,), False, 10_000, 1000, "8 equal Gaussians (std 0.1) on the unit circle, 2-D"),
    # Dynamic thresholding (solvers-spec §0.2) clips to [-1, 1]; the std-0.05 components put mass
    # just outside it at saturated pixels, so it is off for the mixtures (it costs FD there).
    _spec("digits", (1, 8, 8), False, 10_000, 1000,
          "Gaussian mixture on scikit-learn's 1,797 8x8 digits in [-1, 1], component std 0.05"),
    # 3072-d states: batches of 250 keep the solver arithmetic in cache (about 15% faster than 1000).
    _spec("digits32", (3, 32, 32), False, 5_000, 250,
          "the digits mixture upsampled to 3x32x32 (CIFAR-shaped), component std 0.05"),
]
