"""The trajectories of a PAS fit, streamed chunk by chunk through a memory-mapped scratch file.

A fit follows S student trajectories step by step, and every step's coordinates depend on all of
them. Held at once, their states, solver histories, buffers and bases take O(S x N x D) memory
(about 91 GB at LSUN Bedroom's 3x256x256, NFE 5). Here each step is two passes over chunks of
trajectories instead: the first advances every chunk by one solver step and writes its basis and
offset to the scratch file; the coordinate fit then reads them back chunk by chunk (pas.search);
the second pass applies the fitted coordinates. Between steps a trajectory's whole state (x_T,
x, the directions used, the solver's history) lives in the scratch file, so memory is O(chunk x
D) plus O(S) small values (each trajectory's Gram matrix of its buffer rows). The file lives in
the cache and is deleted when the fit ends, also on error.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import solvers
from pas.basis import Basis, BasisTracker
from pas.search import per_sample_loss
from solvers.context import StepContext


def chunk_slices(count: int, chunk: int) -> list[slice]:
    """``range(count)`` cut into consecutive slices of at most ``chunk``."""
    return [slice(start, min(start + chunk, count)) for start in range(0, count, chunk)]


def scratch_layout(steps: int, k: int, history: int) -> dict[str, int]:
    """The slots a fit keeps per trajectory: x_T, x, the direction used at every step, the
    offset x - target and the k basis vectors of the step being fitted, the solver's history."""
    return {"x_T": 1, "x": 1, "used": steps, "offset": 1, "vectors": k, "history": history}


class Scratch:
    """Per-trajectory tensors [S, D], stored slot-major ([slots, S, D]) in a memory-mapped file,
    so one slot of a chunk is one contiguous block.

    ``layout`` names the slots: name -> how many (e.g. "used": N, one per step).
    """

    def __init__(self, path: Path, samples: int, dim: int, dtype: torch.dtype,
                 layout: dict[str, int]):
        starts = itertools.accumulate(layout.values(), initial=0)
        self.first = dict(zip(layout, starts))
        slots = sum(layout.values())
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype,
                                               shape=(slots, samples, dim))

    def read(self, name: str, part: slice, index: int = 0, count: int | None = None) -> Tensor:
        """Slot ``index`` of ``name`` for the trajectories ``part`` [c, D], or with ``count``
        that many slots from it [count, c, D]: views of the file (nothing is copied)."""
        start = self.first[name] + index
        if count is None:
            return torch.from_numpy(self.array[start, part])
        return torch.from_numpy(self.array[start : start + count, part])

    def write(self, name: str, part: slice, value: Tensor, index: int = 0) -> None:
        self.read(name, part, index).copy_(value.reshape(part.stop - part.start, -1))


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of ``folder``."""
    return shutil.disk_usage(folder).free


@contextlib.contextmanager
def scratch_file(folder: Path, samples: int, dim: int, dtype: torch.dtype,
                 layout: dict[str, int]) -> Iterator[Scratch]:
    """A Scratch in a new file under ``folder``, deleted when the block ends (also on error);
    ValueError when the disk has not room for it."""
    folder.mkdir(parents=True, exist_ok=True)
    needed = sum(layout.values()) * samples * dim * torch.empty(0, dtype=dtype).element_size()
    free = free_bytes(folder)
    if free < needed:
        raise ValueError(f"the PAS fit needs {needed / 2**30:,.1f} GiB of scratch in {folder}, "
                         f"but only {free / 2**30:,.1f} GiB are free")
    handle, name = tempfile.mkstemp(dir=folder, prefix="pas-fit-", suffix=".npy")
    os.close(handle)
    try:
        yield Scratch(Path(name), samples, dim, dtype, layout)
    finally:
        Path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class ScratchStep:
    """One step's StepData (pas.search): the offsets and the first ``q`` basis vectors of every
    chunk, read from the scratch file and moved to ``device``."""

    scratch: Scratch
    parts: list[slice]
    q: int
    device: torch.device

    @property
    def samples(self) -> int:
        return self.parts[-1].stop

    @property
    def dim(self) -> int:
        return self.scratch.array.shape[2]

    @property
    def resident(self) -> bool:
        """One chunk: its tensors may stay in memory across passes (the fit holds them anyway)."""
        return len(self.parts) == 1

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        for part in self.parts:
            offset = self.scratch.read("offset", part).to(self.device)
            basis = self.scratch.read("vectors", part, 0, self.q).to(self.device)
            yield offset, basis


def history_size(student) -> int:
    """How many tensors the student's solver keeps between steps (its history's length)."""
    spec = solvers.get_solver(student.solver)
    stepper = solvers.make_stepper(student.denoiser, spec, spec.resolve(student.options),
                                   student.times)
    return stepper.history.maxlen


@dataclass
class StepTotals:
    """What the first pass of a step adds up over all chunks."""

    before: float = 0.0  # sum of per-sample losses without correction
    direction_norm: float = 0.0  # sum of |d| (the reference start's first coordinate is its mean)
    size: int = 1  # coordinates the data support (the largest over the chunks)


class StudentStream:
    """The student trajectories of a fit, kept in a Scratch between steps.

    ``advance(i)`` takes every chunk to step i: it applies step i-1's decision (x_i = x_{i-1} +
    dt d_used), runs the solver's direction at x_i and writes the basis, the offset x_i - target
    and the uncorrected direction to the scratch; ``apply(i, coords)`` returns the loss the
    corrected direction reaches; ``decide`` records the choice. A chunk's solver is a fresh
    stepper whose history is refilled from the scratch (solvers.stepper: the history is its
    whole state).
    """

    def __init__(self, student, seeds, targets, scratch: Scratch, parts: list[slice],
                 basis: tuple[int, bool], device, dtype: torch.dtype):
        self.student = student  # pas.adaptive.Student
        self.seeds = seeds
        self.targets = targets  # targets(i, part): the teacher's state at t_{i+1} [c, ...]
        self.scratch = scratch
        self.parts = parts
        self.device, self.dtype = device, dtype
        self.spec = solvers.get_solver(student.solver)
        self.opts = self.spec.resolve(student.options)
        self.ts = student.times.to(device=device, dtype=dtype)
        self.tf = self.ts.tolist()
        self.steps = len(self.tf) - 1
        self.tracker = BasisTracker(*basis)
        count = self.parts[-1].stop
        # Each trajectory's Gram matrix of its buffer rows [x_T, used...] (float64, O(S) small).
        self.gram = torch.zeros(count, self.steps + 1, self.steps + 1, dtype=torch.float64,
                                device=device)
        self.labels: Tensor | None = None
        self.history = 0  # entries in every chunk's solver history
        self.previous: tuple[float, Tensor | None] | None = None  # step i-1's dt and decision

    def _start(self, part: slice) -> tuple[Tensor, Tensor]:
        latents, labels = solvers.latents_for_seeds(
            self.seeds[part], self.student.denoiser.shape, dtype=self.dtype, device=self.device,
            label_dim=self.student.denoiser.label_dim)
        if labels is not None:
            if self.labels is None:
                self.labels = torch.zeros(len(self.seeds), dtype=torch.long)
            self.labels[part] = labels.argmax(dim=1).cpu()
        x_T = latents.mul_(self.tf[0]).reshape(len(latents), -1)
        self.scratch.write("x_T", part, x_T)
        return x_T, x_T

    def _resume(self, i: int, part: slice) -> tuple[Tensor, Tensor]:
        """x_T and x_i of a chunk, after applying step i-1's decision: its corrected direction
        (rebuilt from the basis, which is still in the scratch) replaces the solver's own."""
        x_T = self.scratch.read("x_T", part).to(self.device)
        dt, coords = self.previous
        if coords is None:
            used = self.scratch.read("used", part, i - 1).to(self.device)
        else:
            used = self._corrected(part, coords)
            self.scratch.write("used", part, used, i - 1)
        x = torch.add(self.scratch.read("x", part).to(self.device), used, alpha=dt)
        return x_T, x

    def _corrected(self, part: slice, coords: Tensor) -> Tensor:
        """sum_j c_j u_j of a chunk [c, D], with the basis of the step last advanced."""
        vectors = self.scratch.read("vectors", part, 0, len(coords)).to(self.device)
        return Basis(vectors, len(coords)).combine(coords, vectors[0])

    def _labels(self, part: slice) -> Tensor | None:
        if self.labels is None:
            return None
        onehot = torch.nn.functional.one_hot(self.labels[part], self.student.denoiser.label_dim)
        return onehot.to(device=self.device, dtype=self.dtype)

    def advance(self, i: int, loss: str) -> StepTotals:
        """Take every chunk to step i (see the class); the sums of the step's first pass."""
        totals = StepTotals()
        shape = self.student.denoiser.shape
        dt = self.tf[i + 1] - self.tf[i]
        known = self.history  # entries every chunk's history had after step i-1
        for part in self.parts:
            x_T, x = self._start(part) if i == 0 else self._resume(i, part)
            self.scratch.write("x", part, x)
            c = len(x)
            stepper = solvers.make_stepper(self.student.denoiser, self.spec, self.opts, self.ts,
                                           self._labels(part))
            if known:
                stepper.history.extend(
                    self.scratch.read("history", part, 0, known).to(self.device)
                    .reshape(known, c, *shape).unbind())
            d = stepper.direction(i, x.reshape(c, *shape)).reshape(c, -1)
            for slot, entry in enumerate(stepper.history):
                self.scratch.write("history", part, entry, slot)
            self.history = len(stepper.history)
            self.scratch.write("used", part, d, i)
            used = (self.scratch.read("used", part, 0, i).to(self.device).unbind() if i else ())
            ctx = StepContext(i, self.steps, self.ts[i], self.ts[i + 1], x, d, x_T, used)
            # One chunk: the tracker still holds its rows and their products from step i-1.
            gram = self.gram[part, :i, :i] if len(self.parts) > 1 or i == 0 else None
            self.tracker.resume(ctx, gram, i)
            basis = self.tracker.basis(ctx)
            self.gram[part, : i + 1, : i + 1] = self.tracker.known_gram(i + 1)
            self.scratch.read("vectors", part, 0, basis.vectors.shape[0]).copy_(basis.vectors)
            offset = x - self.targets(i, part).to(device=self.device, dtype=self.dtype).reshape(c, -1)
            self.scratch.write("offset", part, offset)
            unchanged = torch.add(offset, d, alpha=dt)
            totals.before += float(per_sample_loss(loss, unchanged).sum(dtype=torch.float64))
            totals.direction_norm += float(d.norm(dim=1).sum(dtype=torch.float64))
            totals.size = max(totals.size, basis.size)
        return totals

    def data(self, size: int) -> ScratchStep:
        """The step's StepData for a fit of ``size`` coordinates."""
        return ScratchStep(self.scratch, self.parts, size, torch.device(self.device))

    def apply(self, i: int, coords: Tensor, loss: str) -> float:
        """The mean loss the trajectories reach at step i with the corrected direction."""
        dt = self.tf[i + 1] - self.tf[i]
        total = 0.0
        for part in self.parts:
            offset = self.scratch.read("offset", part).to(self.device)
            reached = torch.add(offset, self._corrected(part, coords), alpha=dt)
            total += float(per_sample_loss(loss, reached).sum(dtype=torch.float64))
        return total / self.parts[-1].stop

    def decide(self, i: int, coords: Tensor | None) -> None:
        """Step i's decision (the coordinates, or None for the solver's own direction), applied
        to the trajectories at the next ``advance``."""
        self.previous = (self.tf[i + 1] - self.tf[i], coords)
