"""The one rule that judges a change between two measurements, for bench.compare and bench.history.

A change has two sizes: relative, (new - old) / |old|, and in combined standard errors,
(new - old) / sqrt(se_old^2 + se_new^2). It is judged against a relative tolerance and a z:

- ``worse`` / ``better``: past both gates (a rise / a fall; lower is better for every metric and
  for seconds per sample). Without standard errors (older rows, ``blocks = 1``) the tolerance
  alone decides.
- ``near miss``: past exactly one gate, either way (a tiny deterministic change of a float64 CPU
  run is past a 1e-9 tolerance but far inside z; a change of many SEs can be inside a loose
  tolerance).
- ``same``: inside both gates. This is what a rerun of unchanged code on another CPU gives
  (reordered float64 sums move a metric by ~1e-13 relative, 0.00 SE): nothing moved.

z = 3 makes a one-sided false alarm about 0.1% per comparison of two independent measurements
whose SEs are right.
"""

from __future__ import annotations

import argparse

import numpy as np
import numpy.typing as npt

DEFAULT_METRIC_TOL = 1e-9
DEFAULT_Z = 3.0
SAME, BETTER, WORSE, NEAR_MISS = "same", "better", "worse", "near miss"

ArrayLike = npt.ArrayLike


def relative_change(old: ArrayLike, new: ArrayLike) -> np.ndarray:
    """(new - old) / |old|; 0 for equal values, +-inf for a change away from 0."""
    old, new = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    diff = new - old
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diff != 0, diff / np.abs(old), 0.0)


def change_in_se(
    old: ArrayLike, new: ArrayLike, se_old: ArrayLike, se_new: ArrayLike
) -> np.ndarray:
    """(new - old) / sqrt(se_old^2 + se_new^2); NaN where either SE is missing, 0 for no change,
    +-inf for a change with zero error."""
    old, new = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    combined = np.hypot(np.asarray(se_old, dtype=float), np.asarray(se_new, dtype=float))
    diff = new - old
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(diff != 0, diff / combined, 0.0)
    return np.where(np.isnan(combined), np.nan, score)


def judge(rel: ArrayLike, score: ArrayLike, tol: float, z: float) -> np.ndarray:
    """Each change's verdict (module docstring) from its relative size and its size in SEs
    (NaN: no SE, the tolerance alone decides)."""
    rel, score = np.asarray(rel, dtype=float), np.asarray(score, dtype=float)
    no_se = np.isnan(score)
    up = (rel > tol) & ((score > z) | no_se)
    down = (rel < -tol) & ((score < -z) | no_se)
    one_gate = ~no_se & ((np.abs(rel) > tol) != (np.abs(score) > z))
    labels = np.full(rel.shape, SAME, dtype=object)
    labels[one_gate] = NEAR_MISS
    labels[up] = WORSE
    labels[down] = BETTER
    return labels


def gate_arg(text: str) -> float:
    """A command-line tolerance or z: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value
