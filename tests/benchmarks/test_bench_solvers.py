"""pytest-benchmark: the solvers' own per-step cost (everything but the network).

A digits32-shaped batch (B=256, 3x32x32, float32) and a near-free denoiser (x * 0.5) isolate the
bookkeeping: directions, histories, thresholding, the step itself. `denoiser-only` times the
NFE denoiser calls alone; per step = (solver - denoiser-only) / NFE. Workflow: README.md here.
"""

from __future__ import annotations

import pytest
import torch

from solvers import sample

NFE = 10
SHAPE = (256, 3, 32, 32)


class HalfDenoiser:
    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        return x * 0.5


CASES = [
    ("ddim", {}),
    ("dpm2", {}),
    ("ipndm", {}),
    ("ipndm_v", {}),
    ("deis", {}),
    ("dpmpp", {}),
    ("unipc", {}),
    ("dpmpp", {"thresholding": True}),
    ("unipc", {"thresholding": True}),
]


@pytest.fixture(scope="module")
def latents():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def test_denoiser_only(benchmark, latents):
    den = HalfDenoiser()

    def calls():
        for _ in range(NFE):
            out = den(latents, None)
        return out

    benchmark(calls)
    assert den.calls >= NFE


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hook"])
@pytest.mark.parametrize(
    "name,opts", CASES, ids=lambda v: v if isinstance(v, str) else "dt" * bool(v)
)
def test_solver_step_cost(benchmark, latents, name, opts, hooked):
    den = HalfDenoiser()
    correction = (lambda ctx: ctx.direction) if hooked else None
    benchmark.extra_info["nfe"] = NFE
    x = benchmark(sample, den, latents, name, NFE, correction=correction, **opts)
    assert x.shape == latents.shape and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert den.calls % NFE == 0
