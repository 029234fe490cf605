"""GITS (Chen et al., ICML 2024): a time schedule chosen from a fine grid by dynamic programming.

The teacher's states x_0..x_{n-1} on a fine grid t_0 > ... > t_{n-1} (the official launch script:
61 points, polynomial rho = 7) and its directions d_i = (x_i - D(x_i, t_i)) / t_i give the cost of
every coarse step: one Euler step from x_i to t_j, measured against the teacher (``cost_matrix``).
``dp`` then picks the path 0 = p_0 < p_1 < ... < p_N = n-1 that minimises
sum_m coeff^m cost[p_m, p_{m+1}] (coeff > 1 weighs late steps more, as the official code does).

Differences from the official code (zju-pi/diff-sampler, gits-main): the path is read from the
argmin recorded while the table is filled, not recovered by float equality; the warm-up
trajectories come from fixed teacher seeds (the official ones are unseeded); the teacher is the
caller's (the harness uses its Heun teacher, the official default is iPNDM on the fine grid).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

METRICS = ("dev", "l1", "l2")
# Rows of the cost matrix are filled this many target times at a time (bounds memory).
TARGET_CHUNK = 16


def cost_matrix(
    trajectory: Tensor, directions: Tensor, times: Tensor, metric: str = "dev"
) -> Tensor:
    """cost[i, j] (i < j; 0 elsewhere) of one Euler step from the teacher's x_i to time t_j.

    ``trajectory`` [n, B, ...] teacher states at ``times`` (n decreasing times); ``directions``
    [n-1, B, ...] (or [n, ...]; the last is unused) the teacher's d at each state. The step
    reaches y = x_i + (t_j - t_i) d_i; the cost is the mean over the B samples of
    ``dev``: deviation(y) - deviation(x_j), deviations from each sample's line x_0 -> x_{n-1}
    (signed: a step can deviate less than the teacher); ``l1`` / ``l2``: the norm of y - x_j.
    Computed in float64.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown GITS metric {metric!r}; valid: {', '.join(METRICS)}")
    count = len(times)
    if trajectory.shape[0] != count or directions.shape[0] < count - 1:
        raise ValueError(
            f"need {count} states and at least {count - 1} directions for {count} times, got "
            f"{trajectory.shape[0]} and {directions.shape[0]}"
        )
    states = trajectory.reshape(count, trajectory.shape[1], -1)
    slopes = directions.reshape(directions.shape[0], directions.shape[1], -1)
    times = torch.as_tensor(times, dtype=torch.float64).to(states.device)
    if metric == "dev":
        cost = _deviation_cost(states, slopes, times)
    else:
        cost = _distance_cost(states, slopes, times, 1 if metric == "l1" else 2)
    return cost.cpu()


def _deviation_cost(states: Tensor, slopes: Tensor, times: Tensor) -> Tensor:
    """The ``dev`` cost without forming any step's state: with the parts orthogonal to the line,
    P_i = (x_{n-1} - x_i)_perp and Q_i = (d_i)_perp, the step to t_j deviates by
    |P_i - s Q_i| = sqrt(|P_i|^2 - 2 s P_i.Q_i + s^2 |Q_i|^2), s = t_j - t_i, so three numbers per
    state and sample suffice (O(n B D) work instead of O(n^2 B D))."""
    count = len(times)
    start, end = states[0].to(torch.float64), states[-1].to(torch.float64)
    unit = end - start
    unit /= unit.norm(dim=-1, keepdim=True)
    moments = torch.zeros(3, count, states.shape[1], dtype=torch.float64, device=states.device)
    for i in range(count - 1):
        offset = end - states[i].to(torch.float64)
        slope = slopes[i].to(torch.float64)
        offset -= (offset * unit).sum(dim=-1, keepdim=True) * unit
        slope -= (slope * unit).sum(dim=-1, keepdim=True) * unit
        moments[:, i] = torch.stack([offset.square().sum(-1), (offset * slope).sum(-1),
                                     slope.square().sum(-1)])
    pp, pq, qq = moments  # each [n, B]; the last state lies on the line: 0
    teacher_dev = pp.sqrt().mean(dim=-1)
    step = times[None, :] - times[:, None]  # [i, j]: t_j - t_i
    squared = (pp[:, None] - 2 * step[..., None] * pq[:, None]
               + step[..., None].square() * qq[:, None])
    stepped = squared.clamp_min(0).sqrt().mean(dim=-1)
    return torch.triu(stepped - teacher_dev[None, :], diagonal=1)


def _distance_cost(states: Tensor, slopes: Tensor, times: Tensor, order: int) -> Tensor:
    """The ``l1`` / ``l2`` cost: the mean norm of y - x_j, TARGET_CHUNK target times at a time."""
    count = len(times)
    cost = torch.zeros(count, count, dtype=torch.float64, device=states.device)
    for i in range(count - 1):
        here, slope = states[i].to(torch.float64), slopes[i].to(torch.float64)
        for targets in torch.arange(i + 1, count, device=states.device).split(TARGET_CHUNK):
            reached = here + (times[targets] - times[i])[:, None, None] * slope
            wrong = reached - states[targets].to(torch.float64)
            cost[i, targets] = wrong.norm(p=order, dim=-1).mean(dim=-1)
    return cost


def dp(cost: Tensor | np.ndarray, steps: int, coeff: float = 1.15) -> list[int]:
    """Indices 0 = p_0 < ... < p_steps = n-1 into the fine grid minimising
    sum_m coeff^m cost[p_m, p_{m+1}], with the argmin of every table entry recorded as it is filled.

    value[k, j] is the least weighted cost of reaching n-1 from j in k steps:
    value[1, j] = cost[j, n-1], value[k, j] = min_{j < i < n-1} cost[j, i] + coeff value[k-1, i].
    Ties go to the smallest i (the official code's choice).
    """
    cost = np.asarray(cost, dtype=np.float64)
    count = cost.shape[0]
    if cost.ndim != 2 or cost.shape[1] != count:
        raise ValueError(f"the cost matrix must be square, got shape {cost.shape}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= count - 1:
        raise ValueError(
            f"steps must be an integer in 1..{count - 1} for {count} points, got {steps!r}"
        )
    value = np.full((steps + 1, count), np.inf)
    choice = np.zeros((steps + 1, count), dtype=np.int64)
    value[1, :-1] = cost[:-1, -1]
    # Allowed next points i after j: later than j, and not the last point (that is step k = 1's).
    allowed = np.triu(np.ones((count, count), dtype=bool), k=1)
    allowed[:, -1] = False
    for k in range(2, steps + 1):
        total = np.where(allowed, cost + coeff * value[k - 1][None, :], np.inf)
        choice[k] = total.argmin(axis=1)
        value[k] = total[np.arange(count), choice[k]]
    path = [0]
    for k in range(steps, 1, -1):
        path.append(int(choice[k, path[-1]]))
    return [*path, count - 1]


def path_cost(cost: Tensor | np.ndarray, path: list[int], coeff: float = 1.15) -> float:
    """The objective ``dp`` minimises, for one path."""
    cost = np.asarray(cost, dtype=np.float64)
    return float(sum(coeff**m * cost[a, b] for m, (a, b) in enumerate(itertools.pairwise(path))))


def afs_path(
    path: list[int], final_distance: Callable[[list[int]], float]
) -> tuple[list[int], dict]:
    """The official AFS option: insert one free first step at the grid point k in 1..p_1-1 whose
    path gives the lowest ``final_distance`` (the solver, run with AFS on the warm-up latents, to
    the teacher's final states); returns the path and {k: distance} of every candidate."""
    if path[1] < 2:
        raise ValueError("AFS needs a fine-grid point before the first searched time; use more "
                         "grid points or turn afs off")
    distances = {k: final_distance([0, k, *path[1:]]) for k in range(1, path[1])}
    best = min(distances, key=lambda k: (distances[k], k))
    return [0, best, *path[1:]], distances
