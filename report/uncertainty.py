"""Error bars from the stored seed-block values: a metric's SE and PAS's paired gain.

Rows carry ``value_blocks``, the metric with each of K seed blocks left out (to first order, see
bench.metrics.frechet; seed n in block n mod K, the same blocks in every cell). Base and PAS cells of one
solver and NFE share their seeds, so their block values pair up and the gain's jackknife error
includes that pairing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Two-sided level of the PAS-gain verdict.
LEVEL = 0.95


@dataclass(frozen=True)
class Gain:
    """Relative gain (base - PAS) / base, its jackknife SE, and whether the t interval of the
    gain at LEVEL (K - 1 degrees of freedom) excludes 0; SE and verdict None without blocks."""

    value: float
    se: float | None = None
    significant: bool | None = None


def _blocks(values: object) -> np.ndarray | None:
    """Block values as an array, or None when a row has none (older rows, ``blocks = 1``)."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) < 2:
        return None
    return np.asarray(values, dtype=np.float64)


def jackknife_se(leave_one_out: np.ndarray) -> float:
    """sqrt((K - 1) / K * sum_k (theta_k - mean)^2) of K leave-one-block-out values."""
    count = leave_one_out.size
    return math.sqrt((count - 1) / count * float(np.square(leave_one_out - leave_one_out.mean()).sum()))


def paired_gain(base: float, fitted: float, base_blocks: object, fitted_blocks: object) -> Gain:
    """PAS's relative gain with its paired jackknife SE and a 95% t-interval verdict."""
    value = (base - fitted) / base
    left_base, left_fitted = _blocks(base_blocks), _blocks(fitted_blocks)
    if left_base is None or left_fitted is None or left_base.shape != left_fitted.shape:
        return Gain(value)
    se = jackknife_se((left_base - left_fitted) / left_base)
    half_width = stats.t.ppf(0.5 + LEVEL / 2, left_base.size - 1) * se
    return Gain(value, se, bool(abs(value) > half_width))
