"""The embedded analytic datasets: exact denoisers and exact statistics."""
import numpy as np
import pytest
import torch
from scipy.special import softmax

from bench.models.registry import dataset_names, get_dataset


def slow_posterior_mean(mixture, x: np.ndarray, sigma: float) -> np.ndarray:
    """E[y | x] from the full B x K x D Gaussian likelihoods, straight from the definition."""
    means = mixture.means.double().numpy()
    var = mixture.std**2 + sigma**2
    sq_dist = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    post = softmax(np.log(mixture.weights.double().numpy()) - sq_dist / (2 * var), axis=1)
    per_component = means[None] + (mixture.std**2 / var) * (x[:, None, :] - means[None])
    return (post[:, :, None] * per_component).sum(1)


@pytest.mark.parametrize("name", ["gmm2d", "digits", "digits32"])
@pytest.mark.parametrize("sigma", [0.002, 0.05, 0.7, 12.0, 80.0])
def test_denoiser_matches_direct_posterior_mean(name, sigma):
    spec = get_dataset(name)
    den = spec.build(dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    clean = den.means[torch.randint(den.means.shape[0], (6,), generator=gen)]
    x = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    fast = den(x.reshape(6, *spec.shape), torch.tensor(sigma, dtype=torch.float64))
    expected = slow_posterior_mean(den, x.numpy(), sigma)
    np.testing.assert_allclose(fast.reshape(6, -1).numpy(), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.invariance
def test_per_sample_sigma_equals_scalar_sigma():
    den = get_dataset("digits").build(dtype=torch.float64)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.01, 0.3, 2.0, 50.0], dtype=torch.float64)
    batched = den(x, sigmas)
    one_by_one = torch.cat([den(x[i : i + 1], sigmas[i]) for i in range(4)])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-13)  # BLAS blocking differs by batch size


def test_float32_follows_float64():
    spec = get_dataset("digits32")
    x = 3.0 * torch.randn(5, *spec.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = spec.build(dtype=torch.float64)(x, torch.tensor(3.0, dtype=torch.float64))
    low = spec.build(dtype=torch.float32)(x.float(), torch.tensor(3.0))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["gmm2d", "digits"])
def test_exact_statistics_match_monte_carlo(name):
    spec = get_dataset(name)
    den = spec.build(dtype=torch.float64)
    n = 400_000
    gen = torch.Generator().manual_seed(7)
    comps = torch.randint(den.means.shape[0], (n,), generator=gen)
    draws = den.means[comps] + den.std * torch.randn(n, den.means.shape[1], generator=gen, dtype=torch.float64)
    mean, cov = spec.exact_stats()
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(draws.mean(0).numpy() - mean), 5 * sd / np.sqrt(n))
    centred = draws.numpy() - mean
    mc_cov = centred.T @ centred / n
    # Standard error of each covariance entry from the sample's own fourth moments: some digit
    # pixels are nearly constant with rare outliers, far from Gaussian.
    sq = centred**2
    se = np.sqrt(np.maximum(sq.T @ sq / n - mc_cov**2, 0) / n)
    np.testing.assert_array_less(np.abs(mc_cov - cov), 6 * se + 1e-12)


def test_digits_means_are_scaled_sklearn_digits():
    from sklearn.datasets import load_digits

    den = get_dataset("digits").build(dtype=torch.float64)
    np.testing.assert_array_equal(den.means.numpy(), load_digits().images.reshape(1797, 64) / 8 - 1)
    assert den.means.min() >= -1 and den.means.max() <= 1
    wide = get_dataset("digits32").build(dtype=torch.float64)
    assert wide.means.shape == (1797, 3 * 32 * 32)
    assert wide.means.min() >= -1 and wide.means.max() <= 1


def test_registry_lists_embedded_datasets_and_rejects_unknown():
    assert {"gmm2d", "digits", "digits32"} <= set(dataset_names())
    with pytest.raises(ValueError, match="unknown dataset 'cifar' ; choose from|unknown dataset 'cifar'"):
        get_dataset("cifar")
