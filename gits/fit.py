"""``gits.fit``: the GITS search of one solver at one NFE from a teacher trajectory on the fine
grid."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

import solvers
from gits.artifact import GITSArtifact
from gits.search import afs_path, cost_matrix, dp

# The official settings (gits-main/launch.sh, sample.py): 61 fine points (of the solver's
# schedule: polynomial rho = 7 in the launch script), the `dev` metric, coeff 1.15, 256 warm-up
# trajectories.
DEFAULTS: dict[str, Any] = {"points": 61, "metric": "dev", "coeff": 1.15, "warmup": 256}


def fine_grid(denoiser, points: int = 61, schedule: str = "polynomial", rho: float = 7.0) -> Tensor:
    """The fine grid GITS chooses from: ``points`` float64 times of a named schedule."""
    extra = {"alphas_cumprod": denoiser.alphas_cumprod} if schedule == "discrete" else {}
    return solvers.get_schedule(schedule, points, float(denoiser.sigma_min),
                                float(denoiser.sigma_max), rho=rho, **extra)


def teacher_directions(denoiser, trajectory: Tensor, times: Tensor,
                       class_labels: Tensor | None = None, batch_size: int = 256) -> Tensor:
    """d_i = (x_i - D(x_i, t_i)) / t_i at every state but the last: [n-1, B, ...]."""
    out = torch.empty_like(trajectory[:-1])
    for i, t in enumerate(times[:-1].tolist()):
        sigma = torch.tensor(t, dtype=trajectory.dtype, device=trajectory.device)
        for start in range(0, trajectory.shape[1], batch_size):
            part = slice(start, start + batch_size)
            x = trajectory[i, part]
            args = (x, sigma) if class_labels is None else (x, sigma, class_labels[part])
            out[i, part] = (x - denoiser(*args)) / t
    return out


def fit(
    denoiser,
    solver: str,
    nfe: int,
    trajectory: Tensor,
    fine: Tensor,
    *,
    latents: Tensor,
    class_labels: Tensor | None = None,
    metric: str = "dev",
    coeff: float = 1.15,
    settings: dict[str, Any] | None = None,
    teacher: dict[str, Any] | None = None,
    batch_size: int = 256,
    dataset: str | None = None,
    **solver_options: Any,
) -> GITSArtifact:
    """Search ``solver``'s schedule at ``nfe`` on the teacher ``trajectory`` [n, B, ...] at the
    ``fine`` times (x_0 = fine[0] * ``latents``).

    The solver's steps N follow from ``nfe`` and its options; DP picks N points (N - 1 with
    ``afs``, whose free first step then goes to the best grid point before the first searched
    time, judged by the final-state L2 distance to the teacher on the same latents, as the
    official code does). ``settings`` and ``teacher`` are recorded in the artifact as given.
    """
    began = time.perf_counter()
    spec = solvers.get_solver(solver)
    options = spec.resolve(solver_options)
    steps = spec.steps_for_nfe(nfe, **options)
    if not math.isfinite(coeff) or coeff <= 0:
        raise ValueError(f"coeff must be a positive number, got {coeff!r}")
    directions = teacher_directions(denoiser, trajectory, fine, class_labels, batch_size)
    cost = cost_matrix(trajectory, directions, fine, metric)
    path = dp(cost, steps - int(options["afs"]), coeff)
    warmup = trajectory.shape[1]
    evaluations = len(fine) - 1
    candidates = None
    if options["afs"]:
        target = trajectory[-1].reshape(warmup, -1)

        def final_distance(candidate: list[int]) -> float:
            final = solvers.sample(denoiser, latents, solver, nfe, fine[candidate],
                                   class_labels=class_labels, **options)
            return float((final.reshape(warmup, -1) - target).norm(dim=1).mean())

        path, distances = afs_path(path, final_distance)
        candidates = {str(k): v for k, v in distances.items()}
        evaluations += len(distances) * nfe
    return GITSArtifact(
        dataset=dataset or denoiser.name, model=denoiser.name, solver=spec.name, nfe=nfe,
        options=options, times=fine[path].tolist(), indices=path, fine_times=fine.tolist(),
        settings={**DEFAULTS, **(settings or {}), "metric": metric, "coeff": coeff,
                  "points": len(fine), "warmup": warmup},
        teacher=teacher or {}, cost=cost.tolist(), afs=candidates, warmup=warmup,
        evaluations=evaluations, search_seconds=time.perf_counter() - began,
        dtype=str(trajectory.dtype).removeprefix("torch."),
    )
