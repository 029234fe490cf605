"""bench.steps: change points weighted by the stored SEs, judged by bench.verdict."""

from __future__ import annotations

import numpy as np
import pytest

from bench.steps import detect, scatter

N = 30


@pytest.mark.parametrize("last_se, verdict", [(0.01, "worse"), (0.1, None)])
def test_a_point_counts_by_its_own_standard_error(last_se: float, verdict: str | None) -> None:
    """The newest point is 0.1 above 30 points at 1.0 +- 0.01: 7.1 combined SEs with its own SE
    0.01 (a regression), 0.99 with SE 0.1 (noise)."""
    values = np.r_[np.ones(N - 1), 1.1]
    ses = np.r_[np.full(N - 1, 0.01), last_se]
    steps = detect(values, ses, tol=1e-9, z=3.0, shared_noise=True)
    assert [(step.start, step.verdict) for step in steps] == ([(N - 1, verdict)] if verdict else [])
    if verdict:
        assert steps[0].score == pytest.approx(0.1 / np.hypot(0.01, 0.01))
        assert steps[0].rel == pytest.approx(0.1)


def test_times_noisier_than_their_se_are_judged_by_their_scatter() -> None:
    """Timings that scatter by 5% with a stored SE of 0.1%: the scatter sets the noise, so no
    step is found in noise, and a 30% slowdown is found at its commit."""
    rng = np.random.default_rng(3)
    noisy = 1e-3 * (1 + 0.05 * rng.standard_normal(2 * N))
    ses = np.full(2 * N, 1e-6)
    assert scatter(noisy) == pytest.approx(5e-5, rel=0.3)
    assert detect(noisy, ses, tol=0.0, z=3.0, shared_noise=False) == []
    slower = noisy * np.where(np.arange(2 * N) >= N, 1.3, 1.0)
    (step,) = detect(slower, ses, tol=0.05, z=3.0, shared_noise=False)
    assert (step.start, step.verdict) == (N, "worse") and step.rel == pytest.approx(0.3, abs=0.05)


def test_without_standard_errors_the_tolerance_alone_decides() -> None:
    values = np.r_[np.ones(N), np.full(N, 1 + 1e-6)]
    ses = np.full(2 * N, np.nan)
    (step,) = detect(values, ses, tol=1e-9, z=3.0, shared_noise=True)
    assert (step.start, step.verdict, np.isnan(step.score)) == (N, "worse", True)
    assert detect(values, ses, tol=1e-5, z=3.0, shared_noise=True) == []
    assert (
        detect(np.r_[np.ones(N), np.full(N, 1 + 1e-13)], ses, tol=1e-9, z=3.0, shared_noise=True)
        == []
    )


def test_a_slowdown_at_the_newest_commit_is_found_there() -> None:
    """1% timing noise with its SE stored: a 10% slowdown of the newest run alone is a step
    there (past the 5% tolerance and far past z)."""
    rng = np.random.default_rng(4)
    times = 1e-3 * (1 + 0.01 * rng.standard_normal(N))
    times[-1] *= 1.1
    (step,) = detect(times, np.full(N, 1e-5), tol=0.05, z=3.0, shared_noise=False)
    assert (step.start, step.verdict) == (N - 1, "worse") and step.score > 3
    assert step.rel == pytest.approx(0.1, abs=0.03)
