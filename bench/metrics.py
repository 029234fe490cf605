"""Streaming sample-quality metrics: Frechet distance (FD in data space, FID in Inception space).

Nothing is kept per sample: an accumulator holds a count, the sum of the feature vectors and the
sum of their outer products, all in float64. Sums can be added across batches, ranks and machines,
so the result does not depend on how the samples were split (up to float64 rounding).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

Features = Callable[[Tensor], Tensor]
# Samples a Frechet metric needs at the least: its covariance has ddof=1. bench.plan checks every
# cell against this before anything runs.
MIN_SAMPLES = 2


def flatten_features(samples: Tensor) -> Tensor:
    """The identity feature map of FD in data space: each sample as one flat vector."""
    return samples.reshape(samples.shape[0], -1)


def _as_double(array: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(array, dtype=torch.float64).cpu()


def _psd_sqrt(cov: Tensor) -> Tensor:
    """Symmetric square root of a covariance; tiny negative eigenvalues from rounding count as 0."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


class FrechetReference:
    """Reference statistics (mu, cov) with the square root of cov computed once.

    FD = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr sqrt(C1 C2), and tr sqrt(C1 C2) is the sum of the
    square roots of the eigenvalues of the symmetric PSD matrix sqrt(C2) C1 sqrt(C2), which has the
    same spectrum as C1 C2. That needs one symmetric eigenvalue problem per evaluation instead of
    the general matrix square root of pytorch-fid, and no eigenvectors.
    """

    def __init__(self, mu: np.ndarray | Tensor, cov: np.ndarray | Tensor) -> None:
        self.mu = _as_double(mu).reshape(-1)
        self.cov = _as_double(cov)
        if self.cov.shape != (self.mu.numel(), self.mu.numel()):
            raise ValueError(f"covariance shape {tuple(self.cov.shape)} does not match mean "
                             f"length {self.mu.numel()}")
        self._cov_sqrt: Tensor | None = None

    @property
    def dim(self) -> int:
        return self.mu.numel()

    def distance(self, mu: np.ndarray | Tensor, cov: np.ndarray | Tensor) -> float:
        """Frechet distance between N(mu, cov) and this reference."""
        mu, cov = _as_double(mu).reshape(-1), _as_double(cov)
        if self._cov_sqrt is None:
            self._cov_sqrt = _psd_sqrt(self.cov)
        product = self._cov_sqrt @ cov @ self._cov_sqrt
        product = 0.5 * (product + product.T)
        trace_sqrt = torch.linalg.eigvalsh(product).clamp(min=0).sqrt().sum()
        diff = mu - self.mu
        value = diff @ diff + cov.trace() + self.cov.trace() - 2 * trace_sqrt
        return float(value)


def frechet_distance(mu1: np.ndarray | Tensor, cov1: np.ndarray | Tensor,
                     mu2: np.ndarray | Tensor, cov2: np.ndarray | Tensor) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2) (same value as pytorch-fid's)."""
    return FrechetReference(mu2, cov2).distance(mu1, cov1)


class MomentAccumulator:
    """Running count, sum and sum of outer products of feature vectors, in float64.

    Features are centred at a fixed ``shift`` (e.g. the reference mean) before they are summed,
    which keeps the covariance free of cancellation when the mean is large relative to the
    spread; the shift is a constant, so sums from different batches or ranks still add up.
    """

    def __init__(self, dim: int, *, shift: Tensor | None = None, device: torch.device | str = "cpu"):
        self.dim = dim
        self.shift = (torch.zeros(dim, dtype=torch.float64) if shift is None else shift.double())
        self.shift = self.shift.to(device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: Tensor) -> None:
        """Add a batch ``[B, dim]`` of feature vectors."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape [B, {self.dim}], got {tuple(features.shape)}")
        centred = features.to(device=self.total.device, dtype=torch.float64) - self.shift
        self.count += centred.shape[0]
        self.total += centred.sum(dim=0)
        self.outer += centred.T @ centred

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`mean_cov`."""
        return [self.count, self.total, self.outer]

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """Sample mean and unbiased (ddof=1) covariance, float64 on the CPU."""
        count = float(self.count)
        if count < MIN_SAMPLES:
            raise ValueError(f"need at least {MIN_SAMPLES} samples for a covariance, got {count:.0f}")
        mean = (self.total / count).cpu()
        outer = self.outer.cpu()
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        return mean + self.shift.cpu(), 0.5 * (cov + cov.T)


class FrechetAccumulator:
    """Streams samples through ``features`` into moments; :meth:`compute` gives the FD/FID."""

    def __init__(self, features: Features, reference: FrechetReference,
                 device: torch.device | str = "cpu") -> None:
        self.features = features
        self.reference = reference
        self.moments = MomentAccumulator(reference.dim, shift=reference.mu, device=device)

    def update(self, samples: Tensor, class_labels: Tensor | None = None) -> None:
        """Add a batch of samples (any shape ``[B, ...]``); labels do not enter the statistics."""
        feats = self.features(samples)
        self.moments.update(feats.reshape(feats.shape[0], -1))

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`compute`."""
        return self.moments.sums()

    def compute(self) -> float:
        """Frechet distance of everything added so far to the reference statistics."""
        return self.reference.distance(*self.moments.mean_cov())

    def extra_fields(self) -> dict[str, float]:
        """Row fields besides the metric's value (none for a plain Frechet distance)."""
        return {}


def rmse(samples: Tensor, targets: Tensor) -> float:
    """Root-mean-square difference over every element, computed in float64."""
    diff = samples.double() - targets.to(device=samples.device, dtype=torch.float64)
    return float(diff.square().mean().sqrt())
