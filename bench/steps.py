"""Steps in a series ordered by commit: found by ruptures, judged by bench.verdict.

Two stages. **Candidates**: ruptures' binary segmentation (``Binseg``) splits the series where
a piecewise-constant fit pays for its extra level. A segment costs the chi-square around its
weighted mean, each point weighted by 1 / sigma_i^2 (``WeightedL2``), and each change point
costs max(z, 1)^2 (in chi-square units: a lone step of z point SEs). sigma_i is the point's stored SE
combined with the series' own scatter (the robust spread of successive differences, so that
measurements noisier than their stored SE, like wall-clock times on a shared machine, do not
split at every point), kept above 1e-12 of the series' level so that series without SEs have
finite weights. Binary segmentation rather than ruptures' exact PELT: PELT is pure Python there
and prunes little on noisy series (9.4 s against 1.7 s for a history of 200 commits x 240
series, tests/benchmarks/test_bench_history.py, under load), and a single step between commits
is what binary segmentation finds best.
**Verdict**: each change point compares the levels of its two segments with bench.verdict's
rule, the one bench.compare applies to two runs. A segment's level is its weighted mean; its SE
depends on what the stored SE measures:

- metric values (``shared_noise``): ``value_se`` is the error of the seed set, and every commit
  samples the same seeds, so it does not shrink with more commits. The level's SE is the
  segment's RMS stored SE, plus the extra scatter / sqrt(n). A step is then judged as one run on
  each side would be, and a change far below the metric's sampling error (a real but irrelevant
  code change) stays "same".
- times: ``s_per_sample_se`` and the scatter are independent from run to run, so the level's SE
  is that of a weighted mean, 1 / sqrt(sum 1 / sigma_i^2).

Only steps judged ``worse`` or ``better`` are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import ruptures
from ruptures.base import BaseCost

from bench.verdict import BETTER, WORSE, change_in_se, judge, relative_change

# Smallest relative noise floor: keeps weights finite for series without any SE or scatter.
MIN_RELATIVE_SIGMA = 1e-12


class WeightedL2(BaseCost):
    """Chi-square of a segment around its weighted mean, from cumulative sums (O(1) per segment).

    The signal has two columns: value and weight (1 / sigma^2)."""

    model = "weighted_l2"
    min_size = 1

    def fit(self, signal: np.ndarray) -> WeightedL2:
        self.signal = signal
        values, weights = signal[:, 0], signal[:, 1]
        zero = np.zeros(1)
        self.sum_w = np.concatenate([zero, np.cumsum(weights)])
        self.sum_wy = np.concatenate([zero, np.cumsum(weights * values)])
        self.sum_wyy = np.concatenate([zero, np.cumsum(weights * values**2)])
        return self

    def error(self, start: int, end: int) -> float:
        w = self.sum_w[end] - self.sum_w[start]
        wy = self.sum_wy[end] - self.sum_wy[start]
        return max(float(self.sum_wyy[end] - self.sum_wyy[start] - wy * wy / w), 0.0)


@dataclass(frozen=True)
class Step:
    """A change between two segments: ``start`` indexes the first point after it."""

    start: int
    before: float
    after: float
    se_before: float
    se_after: float
    rel: float
    score: float
    verdict: str


def scatter(values: np.ndarray) -> float:
    """Robust point scatter from successive differences: 1.4826 MAD / sqrt(2) (0 when most
    neighbours are equal, as for a deterministic metric); a few steps barely move it."""
    if values.size < 3:
        return 0.0
    diffs = np.diff(values)
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))


def point_sigmas(values: np.ndarray, ses: np.ndarray) -> tuple[np.ndarray, float]:
    """Each point's sigma for the segmentation and the series' extra scatter."""
    extra = scatter(values)
    sigma = np.hypot(np.nan_to_num(ses), extra)
    floor = MIN_RELATIVE_SIGMA * float(np.median(np.abs(values))) or np.finfo(float).tiny
    return np.maximum(sigma, floor), extra


def change_points(values: np.ndarray, sigma: np.ndarray, z: float) -> list[int]:
    """Starts of the segments after the first (binary segmentation, weighted L2, penalty
    max(z, 1)^2)."""
    weights = 1.0 / sigma**2
    centred = values - np.average(values, weights=weights)
    cost = WeightedL2().fit(np.column_stack([centred, weights]))
    penalty = max(z, 1.0) ** 2
    # One segment already fits within the penalty: no split can pay for itself (the usual case
    # for a deterministic metric, and the shortcut that keeps long histories fast).
    if values.size < 2 or cost.error(0, values.size) <= penalty:
        return []
    found = (
        ruptures.Binseg(custom_cost=cost, min_size=1, jump=1).fit(cost.signal).predict(pen=penalty)
    )
    return found[:-1]


def _level(
    values: np.ndarray, ses: np.ndarray, sigma: np.ndarray, extra: float, shared_noise: bool
) -> tuple[float, float]:
    """A segment's weighted mean and its SE (module docstring); NaN SE when nothing measures it."""
    weights = 1.0 / sigma**2
    level = float(np.average(values, weights=weights))
    if np.isnan(ses).all() and extra == 0:
        return level, float("nan")
    if shared_noise:
        stored = float(np.sqrt(np.nanmean(ses**2))) if not np.isnan(ses).all() else 0.0
        return level, float(np.hypot(stored, extra / np.sqrt(values.size)))
    return level, float(1.0 / np.sqrt(weights.sum()))


def detect(
    values: np.ndarray, ses: np.ndarray, tol: float, z: float, shared_noise: bool
) -> list[Step]:
    """The worse/better steps of one series (ordered by commit; NaN SE: none stored)."""
    values, ses = np.asarray(values, dtype=float), np.asarray(ses, dtype=float)
    sigma, extra = point_sigmas(values, ses)
    bounds = [0, *change_points(values, sigma, z), values.size]
    levels = [
        _level(values[a:b], ses[a:b], sigma[a:b], extra, shared_noise) for a, b in pairwise(bounds)
    ]
    steps = []
    for start, (before, se_b), (after, se_a) in zip(
        bounds[1:-1], levels[:-1], levels[1:], strict=True
    ):
        rel = float(relative_change(before, after))
        score = float(change_in_se(before, after, se_b, se_a))
        verdict = judge(rel, score, tol, z).item()
        if verdict in (WORSE, BETTER):
            steps.append(Step(start, before, after, se_b, se_a, rel, score, verdict))
    return steps
