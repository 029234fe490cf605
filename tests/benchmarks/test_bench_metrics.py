"""pytest-benchmark: streaming metric sums, the Frechet distance, and one runner cell.

The normal suite runs each once at a small size. ``PAS_BENCH_FULL=1`` uses the size of the
performance target: digits32, ddim, 10,000 samples, NFE 8 then the timed NFE 10 cell, whose harness
overhead (cell wall-clock minus time in denoiser calls and in the metric) must stay under 5 %; the
measured split of both cells is stored in the benchmark's extra_info and printed (run with -s).
Workflow: README.md here.
"""
from __future__ import annotations

import os
import time
from argparse import Namespace

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from bench.distributed import World
from bench.grids import Grid
from bench.metrics.frechet import FrechetReference, MomentAccumulator
from bench.plan import Overrides, build_plan
from bench.results import RunFile
from bench.run import Runner

FULL = os.environ.get("PAS_BENCH_FULL") == "1"
CELL = ("digits32", 10_000, 250) if FULL else ("digits", 500, 250)  # dataset, samples, batch
DIM = 2048 if FULL else 512  # Inception's feature size in the full run
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")


def test_moment_update(benchmark):
    batch = torch.randn(500, 3072, generator=torch.Generator().manual_seed(0))
    acc = MomentAccumulator(3072)
    benchmark(acc.update, batch)
    assert float(acc.count) >= 500 and acc.outer.dtype == torch.float64


def test_frechet_distance(benchmark):
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(DIM, DIM)) / 50
    cov_ref, cov = factor @ factor.T, factor @ factor.T + np.eye(DIM) * 0.1
    reference = FrechetReference(np.zeros(DIM), cov_ref)
    value = benchmark(reference.distance, np.full(DIM, 0.01), cov)
    # Against pytorch-fid's general matrix square root on a smaller slice of the same matrices.
    part = slice(0, 256)
    small = FrechetReference(np.zeros(256), cov_ref[part, part]).distance(np.full(256, 0.01),
                                                                           cov[part, part])
    expected = calculate_frechet_distance(np.full(256, 0.01), cov[part, part], np.zeros(256),
                                          cov_ref[part, part])
    assert small == pytest.approx(expected, rel=1e-8) and np.isfinite(value)


class TimedDenoiser:
    """The same denoiser, adding up the wall-clock time spent inside its calls."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


def test_runner_cell_overhead(benchmark, tmp_path):
    """The first cell of a dataset draws its latents; later cells (timed) reuse them."""
    dataset, samples, batch = CELL
    grid = Grid(name="overhead", source="-", datasets=(dataset,), solvers=("ddim",), nfe=(8, 10),
                pas="off", num_samples=samples, batch_size=batch)
    first, cell = build_plan(grid, Overrides())
    args = Namespace(save_images=None, quiet=True, model_path=None, ref_stats=None,
                     inception_weights=None)
    runner = Runner(args, World(), torch.device("cpu"), "overhead", RunFile(tmp_path, "bench"),
                    tmp_path / "cache")
    # Once-per-run work (building the denoiser, the exact data statistics) is done up front.
    timed = TimedDenoiser(runner.denoiser(cell))
    runner.denoiser = lambda _: timed
    runner.metric(cell)

    def split(target):
        timed.seconds = 0.0
        began = time.perf_counter()
        row = runner.run_cell(target)
        wall = time.perf_counter() - began
        overhead = wall - timed.seconds - row["metric_s"]
        return row, {"wall_s": wall, "denoiser_s": timed.seconds, "metric_s": row["metric_s"],
                     "overhead_s": overhead, "overhead_fraction": overhead / wall}

    _, cold = split(first)
    row, warm = benchmark.pedantic(split, args=(cell,), rounds=1, iterations=1)
    benchmark.extra_info.update(warm, first_cell_overhead_fraction=cold["overhead_fraction"])
    for name, parts in (("first cell (nfe 8)", cold), ("next cell (nfe 10)", warm)):
        print(f"\n{dataset} ddim, {samples} samples, {name}: cell {parts['wall_s']:.2f} s, denoiser "
              f"{parts['denoiser_s']:.2f} s, metric {parts['metric_s']:.2f} s, overhead "
              f"{parts['overhead_s']:.2f} s ({100 * parts['overhead_fraction']:.1f} %)")
    assert np.isfinite(row["value"]) and row["num_samples"] == samples
