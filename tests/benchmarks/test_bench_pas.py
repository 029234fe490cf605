"""pytest-benchmark: PAS fitting (after the cached teacher), the basis, and sampling with PAS.

The normal suite runs each once at a small size. ``PAS_BENCH_FULL=1`` uses the sizes of the
performance targets: digits, ddim, NFE 10, 5,000 trajectories, and digits32 with 1,000
trajectories (the fit after the cached teacher, search and held-out gate; the artifact's
``fit_parts`` split it into denoiser, basis, optimiser and gate). Workflow: README.md here.
"""

from __future__ import annotations

import os

import pytest
import torch

import pas
import solvers
from bench.models.registry import get_dataset
from pas.basis import build_basis

FULL = os.environ.get("PAS_BENCH_FULL") == "1"
SIZES = {  # dataset: (trajectories, teacher_nfe)
    "digits": (5000, 100) if FULL else (500, 100),
    "digits32": (1000, 100) if FULL else (64, 20),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pas-bench-cache")


def _fit(dataset: str, cache, **extra) -> pas.PASArtifact:
    trajectories, teacher_nfe = SIZES[dataset]
    den = get_dataset(dataset).build(dtype=torch.float32)
    return pas.fit(den, "ddim", 10, trajectories=trajectories, teacher_nfe=teacher_nfe,
                   cache_dir=cache, progress=False, **extra)


@pytest.mark.parametrize("chunk", ["default", "one"])
@pytest.mark.parametrize("dataset", list(SIZES))
def test_fit_after_teacher(benchmark, cache, dataset, chunk):
    """The fit streams its trajectories in chunks (pas.stream): the device's default chunk, or
    all trajectories in one."""
    extra = {"chunk": SIZES[dataset][0]} if chunk == "one" else {}
    _fit(dataset, cache)  # fills the teacher cache, so the timed fits measure the search only
    art = benchmark.pedantic(_fit, args=(dataset, cache), kwargs=extra, rounds=1, iterations=1)
    assert art.teacher["cached"] and len(art.search) == 10
    assert art.n_params == sum(s.n_coords for s in art.search if s.index in art.corrected)


def test_basis(benchmark):
    gen = torch.Generator().manual_seed(0)
    x_T = 80 * torch.randn(5000, 64, generator=gen)
    used = [torch.randn(5000, 64, generator=gen) for _ in range(9)]
    basis = benchmark(build_basis, used[-1], used[-1] + 0.1, [x_T, *used], x_T, 4)
    assert basis.vectors.shape == (4, 5000, 64)


def test_sample_with_pas(benchmark, cache):
    art = _fit("digits", cache)
    den = get_dataset("digits").build(dtype=torch.float32)
    latents, _ = solvers.latents_for_seeds(range(2000), den.shape)
    x = benchmark(solvers.sample, den, latents, "ddim", 10, correction=art.correction())
    assert x.shape == (2000, 1, 8, 8) and torch.isfinite(x).all()
