"""Teacher trajectories (pas-spec §2, decision 0.8): Heun on the student's own schedule with M
points inserted in every student interval, keeping only the states at the student's points.

The result is cached on disk under a hash of everything that determines it, so every solver that
shares the schedule and NFE reuses it and a second fit makes no teacher denoiser calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

import solvers
from pas.cache import config_hash, load_tensors, save_tensors

TEACHERS = ("heun",)
TEACHER_SEED_START = 10_000_000
"""Teacher seeds start here so that they never overlap the evaluation seeds 0..N-1."""


def inserted_points(steps: int, teacher_nfe: int) -> int:
    """M, the fewest points per student interval for a Heun teacher to reach ``teacher_nfe``."""
    return max(0, math.ceil(teacher_nfe / (2 * steps)) - 1)


def teacher_grid(
    times: Tensor,
    inserted: int,
    schedule: str | None,
    sigma_range: tuple[float, float],
    *,
    rho: float = 7.0,
    alphas_cumprod: Tensor | None = None,
) -> Tensor:
    """The K_T = N(M+1)+1 teacher times whose every (M+1)-th point is a student time.

    A named schedule is recomputed with K_T points (its embedding property, solvers-spec 1.6); an
    explicit list of times is subdivided uniformly in log t. The student times are written into
    their slots so that they match bit for bit.
    """
    times = times.to(torch.float64).cpu()
    stride = inserted + 1
    count = (len(times) - 1) * stride + 1
    if schedule is None:
        frac = torch.arange(stride, dtype=torch.float64) / stride
        logs = times.log()
        inner = logs[:-1, None] + frac[None] * (logs[1:] - logs[:-1])[:, None]
        fine = torch.cat([inner.reshape(-1).exp(), times[-1:]])
    else:
        extra = {"alphas_cumprod": alphas_cumprod} if schedule == "discrete" else {}
        fine = solvers.get_schedule(schedule, count, *sigma_range, rho=rho, **extra)
        if not torch.allclose(fine[::stride], times, rtol=1e-10, atol=0.0):
            raise ValueError(
                f"the {schedule} schedule with {count} points does not contain the student's"
            )
    fine[::stride] = times
    return fine


@dataclass
class TeacherTrajectories:
    """Teacher states at the student's points, [N+1, S, *shape] (CPU), and how they were made.

    ``seconds`` is the time this call took (a cache read when ``cached``); ``generation_seconds``
    is what running the teacher cost when the entry was made.
    """

    states: Tensor
    config: dict[str, Any]
    seconds: float
    generation_seconds: float
    cached: bool


def seed_range(seeds: Sequence[int]) -> list[int] | None:
    """[start, stop] when ``seeds`` is a contiguous increasing range, else None."""
    seeds = list(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return [seeds[0], seeds[0] + len(seeds)]
    return None


def _seed_key(seeds: Sequence[int]) -> Any:
    span = seed_range(seeds)
    return {"range": span} if span else {"sha256": config_hash({"seeds": [int(s) for s in seeds]})}


def _run_teacher(
    denoiser,
    fine: Tensor,
    stride: int,
    seeds: Sequence[int],
    dtype,
    device,
    batch_size: int,
    progress: bool,
) -> Tensor:
    states = []
    chunks = [list(seeds[i : i + batch_size]) for i in range(0, len(seeds), batch_size)]
    nfe = 2 * (len(fine) - 1)
    bar = tqdm(chunks, desc="PAS teacher", unit="batch", disable=None if progress else True)
    for chunk in bar:
        latents, onehot = solvers.latents_for_seeds(
            chunk, denoiser.shape, dtype=dtype, device=device, label_dim=denoiser.label_dim
        )
        _, trajectory = solvers.sample(
            denoiser,
            latents,
            "heun",
            nfe,
            schedule=fine,
            class_labels=onehot,
            return_trajectory=True,
        )
        states.append(trajectory[::stride].cpu())
    return torch.cat(states, dim=1)


def teacher_trajectories(
    denoiser,
    times: Tensor,
    *,
    schedule: str | None,
    rho: float,
    seeds: Sequence[int],
    teacher: str = "heun",
    teacher_nfe: int = 100,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path,
    progress: bool = True,
) -> TeacherTrajectories:
    """The teacher's states at ``times`` for each seed, from the cache when present."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown PAS teacher {teacher!r}; valid: {', '.join(TEACHERS)}")
    steps = len(times) - 1
    inserted = inserted_points(steps, teacher_nfe)
    config = {
        "kind": "pas-teacher",
        "version": 1,
        "model": denoiser.name,
        "sigma_min": float(denoiser.sigma_min),
        "sigma_max": float(denoiser.sigma_max),
        "schedule": schedule,
        "rho": float(rho),
        "times": [float(t) for t in times.to(torch.float64)],
        "steps": steps,
        "teacher": teacher,
        "teacher_nfe": int(teacher_nfe),
        "inserted": inserted,
        "seeds": _seed_key(seeds),
        "dtype": str(dtype).removeprefix("torch."),
        "label_dim": int(denoiser.label_dim),
    }
    path = Path(cache_dir) / "teacher" / f"{config_hash(config)}.pt"
    start = time.perf_counter()
    stored = load_tensors(path)
    if stored is not None and stored.get("config") == config:
        elapsed = time.perf_counter() - start
        return TeacherTrajectories(
            stored["states"], config, elapsed, stored["seconds"], cached=True
        )
    alphas = getattr(denoiser, "alphas_cumprod", None)
    sigma_range = (float(denoiser.sigma_min), float(denoiser.sigma_max))
    fine = teacher_grid(times, inserted, schedule, sigma_range, rho=rho, alphas_cumprod=alphas)
    states = _run_teacher(denoiser, fine, inserted + 1, seeds, dtype, device, batch_size, progress)
    seconds = time.perf_counter() - start
    save_tensors({"config": config, "states": states, "seconds": seconds}, path)
    return TeacherTrajectories(states, config, seconds, seconds, cached=False)
