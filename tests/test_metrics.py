"""Streaming Frechet distance: exactness against pytorch-fid and numpy, and split invariance."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from bench.metrics.frechet import (
    FrechetAccumulator,
    FrechetReference,
    MomentAccumulator,
    flatten_features,
    frechet_distance,
    rmse,
)

# pytorch-fid still passes scipy's deprecated `disp` argument; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")


def _random_stats(rng: np.random.Generator, dim: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    data = rng.normal(size=(count, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return data.mean(axis=0), np.cov(data, rowvar=False)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_distance_matches_pytorch_fid(dim):
    rng = np.random.default_rng(dim)
    mu1, cov1 = _random_stats(rng, dim, 4 * dim)
    mu2, cov2 = _random_stats(rng, dim, 4 * dim)
    expected = calculate_frechet_distance(mu1, cov1, mu2, cov2)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-9)
    # Symmetric in its two arguments, like the closed form.
    assert frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_closed_forms():
    # Same Gaussian: 0. Isotropic covariances a^2 I and b^2 I in d dimensions: d (a - b)^2.
    cov = np.diag([1.0, 4.0, 9.0])
    assert frechet_distance(np.ones(3), cov, np.ones(3), cov) == pytest.approx(0.0, abs=1e-12)
    dim, a, b = 5, 2.0, 0.5
    shift = np.arange(dim, dtype=float)
    value = frechet_distance(shift, a**2 * np.eye(dim), np.zeros(dim), b**2 * np.eye(dim))
    assert value == pytest.approx(shift @ shift + dim * (a - b) ** 2, rel=1e-12)


def test_frechet_distance_singular_covariance():
    # A rank-1 reference (e.g. all mass on a line) is handled without an eps offset.
    ref = np.array([[1.0, 1.0], [1.0, 1.0]])
    cov = np.array([[2.0, 0.0], [0.0, 2.0]])
    # tr sqrt(C R) = sqrt(4) = 2 (C R has eigenvalues 4 and 0).
    assert frechet_distance(np.zeros(2), cov, np.zeros(2), ref) == pytest.approx(2 + 4 - 4, abs=1e-12)


@pytest.mark.invariance
@pytest.mark.parametrize("dim", [6, 1100])  # 1100: outer products in 4 column blocks
def test_moments_match_numpy_and_ignore_splits(dim):
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(203, dim)) * 3 + 100)
    whole = MomentAccumulator(dim, shift=torch.full((dim,), 100.0))
    whole.update(data[:50])
    whole.sums()  # reading the sums between updates changes nothing
    whole.update(data[50:])
    # Two "ranks" taking alternate batches of 7, then their sums added.
    parts = [MomentAccumulator(dim, shift=torch.full((dim,), 100.0)) for _ in range(2)]
    for number, chunk in enumerate(torch.split(data, 7)):
        parts[number % 2].update(chunk)
    merged = MomentAccumulator(dim, shift=torch.full((dim,), 100.0))
    for acc in parts:
        for mine, theirs in zip(merged.sums(), acc.sums()):
            mine += theirs
    mean, cov = whole.mean_cov()
    np.testing.assert_allclose(mean.numpy(), data.numpy().mean(axis=0), rtol=1e-14)
    # Off-diagonal entries near zero: their error is relative to the variances (~9), not to them.
    np.testing.assert_allclose(cov.numpy(), np.cov(data.numpy(), rowvar=False), rtol=1e-12,
                               atol=1e-13)
    merged_mean, merged_cov = merged.mean_cov()
    np.testing.assert_allclose(merged_mean.numpy(), mean.numpy(), rtol=1e-14)
    np.testing.assert_allclose(merged_cov.numpy(), cov.numpy(), rtol=1e-12, atol=1e-13)


def test_accumulator_needs_two_samples_and_right_width():
    acc = MomentAccumulator(3)
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.zeros(4, 2))
    acc.update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2"):
        acc.mean_cov()


@pytest.mark.invariance
def test_frechet_accumulator_with_stand_in_features():
    # A small fixed non-linear feature map stands in for Inception.
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(3 * 4 * 4, 5, generator=gen, dtype=torch.float64)

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(images.reshape(images.shape[0], -1) @ weight)

    images = torch.rand(300, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    ref_feats = features(torch.rand(500, 3, 4, 4, generator=gen, dtype=torch.float64)).numpy()
    mu_ref, cov_ref = ref_feats.mean(axis=0), np.cov(ref_feats, rowvar=False)
    acc = FrechetAccumulator(features, FrechetReference(mu_ref, cov_ref))
    for chunk in torch.split(images, 64):
        acc.update(chunk)
    feats = features(images).numpy()
    expected = calculate_frechet_distance(feats.mean(axis=0), np.cov(feats, rowvar=False),
                                          mu_ref, cov_ref)
    assert acc.compute() == pytest.approx(expected, rel=1e-9)


def test_flatten_and_rmse():
    samples = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    assert flatten_features(samples).shape == (2, 12)
    assert rmse(samples, samples + 3) == pytest.approx(3.0, rel=1e-15)
    assert rmse(torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(2.5)
