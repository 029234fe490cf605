"""pytest-benchmark: one GITS search on digits32 at the official settings (61 fine points, 256
warm-up trajectories, the dev metric, NFE 5), from a teacher trajectory solved once beforehand.

The search makes 60 x 256 = 15,360 denoiser evaluations (the teacher's directions) and fills the
61 x 61 cost matrix; the teacher itself (Heun on the fine grid, 120 NFE x 256) is not timed.
Workflow: README.md here.
"""

from __future__ import annotations

import pytest
import torch

import gits
import solvers
from bench.models.registry import get_dataset


@pytest.fixture(scope="module")
def teacher():
    den = get_dataset("digits32").build()
    fine = gits.fine_grid(den)
    warm, _ = solvers.latents_for_seeds(range(10_000_000, 10_000_256), den.shape)
    _, trajectory = solvers.sample(den, warm, "heun", 120, fine, return_trajectory=True)
    return den, fine, warm, trajectory


def test_gits_search_digits32(benchmark, teacher):
    den, fine, warm, trajectory = teacher
    found = benchmark(lambda: gits.fit(den, "ddim", 5, trajectory, fine, latents=warm))
    assert found.evaluations == 60 and found.warmup == 256 and len(found.times) == 6


def test_gits_cost_matrix_digits32(benchmark, teacher):
    den, fine, _, trajectory = teacher
    directions = gits.teacher_directions(den, trajectory, fine)
    cost = benchmark(lambda: gits.cost_matrix(trajectory, directions, fine))
    assert cost.shape == (61, 61) and torch.count_nonzero(torch.tril(cost)) == 0
