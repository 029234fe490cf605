"""Test denoisers for the solver tests: an exact Gaussian denoiser with a closed-form ODE solution."""

import math

import torch


class GaussianDenoiser:
    """Exact denoiser of N(mu, s^2 I): D(x, t) = mu + s^2 / (s^2 + t^2) (x - mu)."""

    name, label_dim = "gaussian", 0

    def __init__(self, mu=0.5, s=1.0, sigma_min=0.002, sigma_max=80.0, shape=(4,)):
        self.mu, self.s = mu, s
        self.sigma_min, self.sigma_max, self.shape = sigma_min, sigma_max, shape
        self.calls = 0

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        return self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)

    def solution(self, x0, t0, t):
        """x(t) = mu + sqrt((s^2 + t^2) / (s^2 + t0^2)) (x(t0) - mu)."""
        return self.mu + math.sqrt((self.s**2 + t**2) / (self.s**2 + t0**2)) * (x0 - self.mu)


def latents(batch=8, shape=(4,), seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=gen, dtype=dtype)
