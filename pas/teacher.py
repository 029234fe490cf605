"""Teacher trajectories (pas-spec §2, decision 0.8), shared by every fit that can use them.

A fit's own teacher is Heun on the student's schedule with M points inserted in every student
interval (pas-spec 2.1). Several fits (other NFEs, schedules, solvers) on the same model and seeds
share one teacher solve: its grid holds every time any of them needs, and no teacher step is longer
than the step any one fit's own teacher grid takes at that time, so no fit gets a coarser teacher.
The grid is chosen from the points of the fits' own grids, greedily taking the longest step that
keeps that promise; for a single fit it is exactly that fit's own grid.

Only the states at the needed times are kept, in a memory-mapped file in the cache, written batch
by batch. A later request reuses a stored solve whose times include all it needs and whose steps
are nowhere longer than its own grid's; otherwise it solves once more, and then deletes the stored
solves the new one supersedes. Before a solve, the cache's disk must have room for its states.
Where one shared solve would hold too many times, ``split_requests`` cuts the requests into
consecutive parts of at most a given number of times, each solved on its own.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

import solvers
from pas.cache import config_hash

TEACHERS = ("heun",)
TEACHER_SEED_START = 10_000_000
"""Teacher seeds start here so that they never overlap the evaluation seeds 0..N-1."""
# Two times closer than this (relative) are the same time (schedules pin their endpoints, but
# two formulas may round the same time differently in the last bit).
SAME_TIME = 1e-12
FORMAT_VERSION = 2


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


@dataclass(frozen=True)
class TeacherRequest:
    """One fit's need: its student times, and the grid its own teacher would take."""

    times: Tensor
    fine: Tensor

    @classmethod
    def for_student(
        cls,
        denoiser,
        times: Tensor,
        schedule: str | None,
        rho: float,
        teacher_nfe: int,
    ) -> TeacherRequest:
        """The request of a student on ``times`` (``schedule`` None for explicit times)."""
        times = times.to(torch.float64).cpu()
        fine = teacher_grid(
            times,
            inserted_points(len(times) - 1, teacher_nfe),
            schedule,
            (float(denoiser.sigma_min), float(denoiser.sigma_max)),
            rho=rho,
            alphas_cumprod=getattr(denoiser, "alphas_cumprod", None),
        )
        return cls(times, fine)


def _distinct_descending(values: np.ndarray) -> np.ndarray:
    """Sorted from large to small, with times within SAME_TIME of a kept one dropped."""
    ordered = np.sort(values)[::-1]
    kept = [ordered[0]]
    for value in ordered[1:]:
        if value < kept[-1] * (1 - SAME_TIME):
            kept.append(value)
    return np.array(kept)


def _step_allowed(high: float, low: float, fines: Sequence[np.ndarray]) -> bool:
    """True when no interval of any fit's own grid that meets (low, high) is shorter than it."""
    length = (high - low) * (1 - SAME_TIME)
    for fine in fines:
        meets = (fine[:-1] > low) & (fine[1:] < high)
        if (fine[:-1][meets] - fine[1:][meets] < length).any():
            return False
    return True


def shared_grid(requests: Sequence[TeacherRequest]) -> Tensor:
    """The teacher grid for all ``requests``: every needed time, no step longer than a request's
    own grid takes there, chosen greedily (longest allowed step) from the requests' grid points."""
    fines = [r.fine.numpy() for r in requests]
    points = _distinct_descending(np.concatenate(fines))
    needed = _distinct_descending(np.concatenate([r.times.numpy() for r in requests]))
    must = np.isclose(points[:, None], needed[None], rtol=SAME_TIME, atol=0.0).any(axis=1)
    chosen = [0]
    while chosen[-1] < len(points) - 1:
        here, reach = chosen[-1], chosen[-1] + 1
        while (
            reach + 1 < len(points)
            and not must[reach]
            and _step_allowed(points[here], points[reach + 1], fines)
        ):
            reach += 1
        chosen.append(reach)
    return torch.from_numpy(points[chosen].copy())


def needed_times(requests: Sequence[TeacherRequest]) -> Tensor:
    """Every time the requests need, distinct (within SAME_TIME), from large to small: what a
    solve serving them keeps."""
    times = np.concatenate([r.times.numpy() for r in requests])
    return torch.from_numpy(_distinct_descending(times).copy())


def split_requests(requests: Sequence[TeacherRequest], max_times: int) -> list[list[int]]:
    """Indices of ``requests`` cut into consecutive parts whose solves keep at most ``max_times``
    times each (a request needing more than that alone is a part of its own)."""
    parts: list[list[int]] = []
    for index, request in enumerate(requests):
        if parts and len(needed_times([requests[i] for i in parts[-1]] + [request])) <= max_times:
            parts[-1].append(index)
        else:
            parts.append([index])
    return parts


def _match(wanted: Tensor, stored: Tensor) -> list[int] | None:
    """Index in ``stored`` of each wanted time (within SAME_TIME), or None if one is missing."""
    close = torch.isclose(wanted[:, None], stored[None], rtol=SAME_TIME, atol=0.0)
    if not close.any(dim=1).all():
        return None
    return close.to(torch.int8).argmax(dim=1).tolist()


def _covers(grid: Tensor, stored: Tensor, request: TeacherRequest) -> bool:
    """A stored solve serves a request when it kept the request's times and its grid steps are
    nowhere longer than the request's own grid's."""
    if _match(request.times, stored) is None:
        return False
    fine = [request.fine.numpy()]
    return all(_step_allowed(hi, lo, fine) for hi, lo in zip(grid[:-1].tolist(), grid[1:].tolist()))


@dataclass
class TeacherStates:
    """A stored teacher solve: states at ``times`` for the first ``count`` of its seeds (all the
    request asked for), memory-mapped from disk.

    ``seconds`` is the time the request took (a cache lookup when ``cached``);
    ``generation_seconds`` what the solve cost when it was made.
    """

    folder: Path
    grid: Tensor
    times: Tensor
    count: int
    seconds: float
    generation_seconds: float
    cached: bool

    @property
    def nfe(self) -> int:
        """Denoiser calls per trajectory of the solve (Heun: 2 per step)."""
        return 2 * (len(self.grid) - 1)

    def serves(self, request: TeacherRequest) -> bool:
        """True when this solve holds what ``request`` needs, on a grid no coarser than its own."""
        return _covers(self.grid, self.times, request)

    def remove(self) -> None:
        """Delete the solve from the cache (a later request solves again)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def states(self, times: Tensor, seeds: slice = slice(None)) -> Tensor:
        """The states at ``times`` (each must be stored) of the seeds in ``seeds``: [T, S, ...]."""
        index = _match(times.to(torch.float64).cpu(), self.times)
        if index is None:
            raise ValueError("the teacher solve does not hold the requested times")
        stored = np.load(self.folder / "states.npy", mmap_mode="r")[:, : self.count]
        return torch.from_numpy(np.ascontiguousarray(stored[index, seeds]))


def states_bytes(times: int, seeds: int, shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes on disk of a solve keeping ``times`` states of ``seeds`` samples of ``shape``."""
    return times * seeds * math.prod(shape) * torch.empty(0, dtype=dtype).element_size()


def _check_free_disk(root: Path, needed: int) -> None:
    """ValueError when the disk holding ``root`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(root).free
    if free < needed:
        raise ValueError(f"not enough free disk for the teacher's states: {needed / 2**30:,.1f} "
                         f"GiB needed, {free / 2**30:,.1f} GiB free in {root}; free some space or "
                         "use a cache folder on a larger disk (--cache-dir)")


def seed_range(seeds: Sequence[int]) -> list[int] | None:
    """[start, stop] when ``seeds`` is a contiguous increasing range, else None."""
    seeds = list(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return [seeds[0], seeds[0] + len(seeds)]
    return None


def _identity(denoiser, seeds: Sequence[int], teacher: str, dtype: torch.dtype) -> dict[str, Any]:
    """Everything besides the grid and the seeds' count that determines the teacher's states."""
    span = seed_range(seeds)
    return {
        "kind": "pas-teacher",
        "version": FORMAT_VERSION,
        "model": denoiser.name,
        "sigma_min": float(denoiser.sigma_min),
        "sigma_max": float(denoiser.sigma_max),
        "teacher": teacher,
        # A range of seeds is served by any stored range with the same start that is as long.
        "seeds": (
            {"start": span[0]} if span
            else {"sha256": config_hash({"seeds": [int(s) for s in seeds]})}
        ),
        "dtype": str(dtype).removeprefix("torch."),
        "label_dim": int(denoiser.label_dim),
    }


def _open(folder: Path, identity: dict[str, Any], count: int):
    """(config, grid) of a complete stored solve of ``identity`` with at least ``count`` seeds."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (
        config.get("identity") != identity
        or config.get("count", -1) < count
        or not (folder / "states.npy").is_file()
    ):
        return None
    return config, torch.tensor(config["grid"], dtype=torch.float64)


def _find(root: Path, identity: dict[str, Any], count: int, requests: Sequence[TeacherRequest]):
    """A stored solve that serves every request: (folder, config, grid), or None."""
    folders = sorted(root.iterdir()) if root.is_dir() else []
    for folder in (f for f in folders if not f.name.startswith(".")):
        opened = _open(folder, identity, count)
        if opened and all(
            _covers(opened[1], torch.tensor(opened[0]["times"], dtype=torch.float64), r)
            for r in requests
        ):
            return folder, *opened
    return None


def stored_teacher(
    denoiser,
    requests: Sequence[TeacherRequest],
    *,
    seeds: Sequence[int],
    teacher: str = "heun",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path,
) -> Path | None:
    """The folder of a stored solve that serves every request, or None (nothing is solved)."""
    identity = _identity(denoiser, seeds, teacher, dtype)
    root = Path(cache_dir) / "teacher" / config_hash(identity)
    found = _find(root, identity, len(seeds), requests)
    return found[0] if found else None


def _solve(
    denoiser,
    grid: Tensor,
    keep: list[int],
    seeds: Sequence[int],
    dtype: torch.dtype,
    device,
    batch_size: int,
    progress: bool,
    path: Path,
) -> None:
    """Run Heun over ``grid`` batch by batch, writing the states at ``keep`` into ``path``."""
    shape = (len(keep), len(seeds), *denoiser.shape)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=shape)
    starts = range(0, len(seeds), batch_size)
    for start in tqdm(starts, desc="PAS teacher", unit="batch", disable=None if progress else True):
        chunk = list(seeds[start : start + batch_size])
        latents, onehot = solvers.latents_for_seeds(
            chunk, denoiser.shape, dtype=dtype, device=device, label_dim=denoiser.label_dim
        )
        _, trajectory = solvers.sample(
            denoiser,
            latents,
            "heun",
            2 * (len(grid) - 1),
            schedule=grid,
            class_labels=onehot,
            return_trajectory=True,
        )
        out[:, start : start + len(chunk)] = trajectory[keep].cpu().numpy()
    out.flush()
    del out


def teacher_states(
    denoiser,
    requests: Sequence[TeacherRequest],
    *,
    seeds: Sequence[int],
    teacher: str = "heun",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path,
    progress: bool = True,
    prune: bool = True,
) -> TeacherStates:
    """The teacher's states at every time of ``requests`` for ``seeds``: from a stored solve that
    serves them all, else from one new solve on their shared grid (then stored, and with
    ``prune`` the stored solves it supersedes are deleted; pass False while other processes may
    read them)."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown PAS teacher {teacher!r}; valid: {', '.join(TEACHERS)}")
    identity = _identity(denoiser, seeds, teacher, dtype)
    root = Path(cache_dir) / "teacher" / config_hash(identity)
    began = time.perf_counter()
    found = _find(root, identity, len(seeds), requests)
    cached = found is not None
    if found is None:
        found = _solve_and_store(
            denoiser, requests, root, identity, seeds, dtype, device, batch_size, progress
        )
        if prune:
            _remove_superseded(root, *found[:2])
    folder, config, grid = found
    return TeacherStates(
        folder=folder,
        grid=grid,
        times=torch.tensor(config["times"], dtype=torch.float64),
        count=len(seeds),
        seconds=time.perf_counter() - began,
        generation_seconds=config["seconds"],
        cached=cached,
    )


def _solve_and_store(
    denoiser,
    requests: Sequence[TeacherRequest],
    root: Path,
    identity: dict[str, Any],
    seeds: Sequence[int],
    dtype: torch.dtype,
    device,
    batch_size: int,
    progress: bool,
) -> tuple[Path, dict[str, Any], Tensor]:
    """Solve on the requests' shared grid into a new folder under ``root`` (renamed into place
    when complete, so a reader never sees a partial solve)."""
    began = time.perf_counter()
    grid = shared_grid(requests)
    needed = needed_times(requests)
    root.mkdir(parents=True, exist_ok=True)
    _check_free_disk(root, states_bytes(len(needed), len(seeds), denoiser.shape, dtype))
    work = Path(tempfile.mkdtemp(dir=root, prefix=".solving-"))
    try:
        _solve(denoiser, grid, _match(needed, grid), seeds, dtype, device, batch_size, progress,
               work / "states.npy")
        config = {"identity": identity, "count": len(seeds), "grid": grid.tolist(),
                  "times": needed.tolist(), "seconds": time.perf_counter() - began}
        (work / "config.json").write_text(json.dumps(config))
        folder = root / config_hash({k: config[k] for k in ("count", "grid", "times")})
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder, config, grid


def _supersedes(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """True when the solve ``new`` serves every request ``old`` does: as many seeds, every time
    ``old`` kept, and a grid that refines ``old``'s (each of its steps lies inside one of old's,
    so none is longer than a step that satisfied a request)."""
    def inside(values: list[float], among: list[float]) -> bool:
        return _match(torch.tensor(values, dtype=torch.float64),
                      torch.tensor(among, dtype=torch.float64)) is not None

    return (new["count"] >= old["count"] and inside(old["times"], new["times"])
            and inside(old["grid"], new["grid"]))


def _remove_superseded(root: Path, folder: Path, config: dict[str, Any]) -> None:
    """Delete the other stored solves under ``root`` that the new one at ``folder`` supersedes."""
    for other in (f for f in sorted(root.iterdir()) if f != folder and not f.name.startswith(".")):
        opened = _open(other, config["identity"], 0)
        if opened and _supersedes(config, opened[0]):
            shutil.rmtree(other, ignore_errors=True)
