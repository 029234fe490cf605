"""``pas.fit``: the adaptive search of pas-spec §6 with the decisions of §0, then a held-out gate.

The student solver follows the training trajectories step by step (pas.stream, chunk by chunk
through a scratch file, so memory does not grow with their number). At step i every sample's
basis is built, the shared coordinates are fitted against the teacher's state at t_{i+1}, and the
step is accepted or not before step i+1 starts from the direction chosen (corrected with the
final coordinates, or the solver's own). So the search follows exactly the recursion that
sampling will follow, for every solver, with no per-solver code.

The search judges each step by its one-step loss, which can fall while the final samples get
worse. With ``validate`` (the default) the teacher also solves held-out seeds the search never
sees; the student is run on them with the accepted steps, and with subsets found by dropping steps
one at a time (greedy backward elimination), and the artifact keeps the subset whose final-state
loss is lowest, or nothing when no subset beats the base solver by more than ``tau`` and by more
than the held-out estimate's own noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

import solvers
from pas.artifact import PASArtifact, PASCorrection, StepSearch
from pas.cache import default_cache_dir
from pas.memory import PeakMemory, default_chunk
from pas.search import OPTIMIZERS, FitSettings, accept, fit_coords, loss_name, per_sample_loss
from pas.stream import (
    StudentStream,
    chunk_slices,
    history_size,
    scratch_file,
    scratch_layout,
)
from pas.teacher import TEACHER_SEED_START, TeacherRequest, seed_range, teacher_states

# Held-out seeds: `holdout` x trajectories, but never fewer than this.
MIN_HOLDOUT = 100
# The gate keeps a correction only if its held-out gain exceeds this many standard errors.
GATE_Z = 2.0


@dataclass
class Clock:
    """Seconds spent per part of a fit."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, began: float, nested: float = 0.0) -> float:
        """Add the seconds since ``began`` to ``part``, less ``nested`` seconds that another part
        counted meanwhile; returns now."""
        now = time.perf_counter()
        self.parts[part] = self.parts.get(part, 0.0) + now - began - nested
        return now


class ChunkedDenoiser:
    """The same denoiser, called on at most ``batch_size`` samples at a time (bounds memory);
    the seconds it spends are added to ``clock`` under "denoiser"."""

    def __init__(self, denoiser, batch_size: int, clock: Clock):
        self.inner = denoiser
        self.batch_size = batch_size
        self.clock = clock
        for name in ("name", "shape", "sigma_min", "sigma_max", "label_dim"):
            setattr(self, name, getattr(denoiser, name))

    def __call__(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        began = time.perf_counter()
        parts = []
        for start in range(0, x.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            s = sigma[part] if sigma.ndim else sigma
            labels = class_labels[part] if class_labels is not None else None
            parts.append(self.inner(x[part], s, labels))
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        self.clock.add("denoiser", began)
        return out


@dataclass
class Search:
    """The search's settings and what it found (pas-spec §6)."""

    settings: FitSettings
    taus: tuple[float, float]
    search: list[StepSearch] = field(default_factory=list)
    corrected: dict[int, list[float]] = field(default_factory=dict)

    def run(self, stream: StudentStream, clock: Clock, bar: tqdm) -> None:
        """Fit every step of ``stream`` in turn, deciding each before the next is taken."""
        loss = self.settings.loss
        for i in range(stream.steps):
            began, denoised = time.perf_counter(), clock.parts.get("denoiser", 0.0)
            totals = stream.advance(i, loss)
            samples = stream.parts[-1].stop
            before = totals.before / samples
            q = totals.size
            start = torch.zeros(q, dtype=stream.dtype, device=stream.device)
            start[0] = totals.direction_norm / samples
            # The solver's denoiser calls are the "denoiser" part's.
            began = clock.add("basis", began, clock.parts.get("denoiser", 0.0) - denoised)
            dt = stream.tf[i + 1] - stream.tf[i]
            coords, epochs = fit_coords(stream.data(q), dt, start, self.settings)
            began = clock.add("optimizer", began)
            # The loss of the state the solver will reach with the stored coordinates (0.5).
            after = stream.apply(i, coords, loss)
            tau = self.taus[1] if self.corrected else self.taus[0]
            accepted = accept(before, after, tau)
            stream.decide(i, coords if accepted else None)
            self.search.append(StepSearch(i, q, before, after, accepted, epochs, coords.tolist()))
            if accepted:
                self.corrected[i] = coords.tolist()
            clock.add("basis", began)
            bar.update()
            bar.set_postfix(step=i, before=f"{before:.3g}", after=f"{after:.3g}")


@dataclass
class Student:
    """How to run the student solver: everything ``solvers.sample`` takes besides the latents."""

    denoiser: ChunkedDenoiser
    solver: str
    nfe: int
    times: Tensor
    options: dict[str, Any]

    def run(self, latents: Tensor, labels: Tensor | None, correction=None) -> Tensor:
        return solvers.sample(
            self.denoiser,
            latents,
            self.solver,
            self.nfe,
            schedule=self.times,
            correction=correction,
            class_labels=labels,
            **self.options,
        )


def _gate(
    held_out_losses,
    corrected: dict[int, list[float]],
    basis: tuple[int, bool],
    steps: int,
    tau: float,
) -> tuple[dict[int, list[float]], dict[str, Any]]:
    """The subset of ``corrected`` to keep, chosen on held-out seeds, and the record of the choice.

    ``held_out_losses(hook)`` is the per-sample final-state loss of the held-out seeds sampled
    with ``hook`` (None: the base solver). Greedy backward elimination from all accepted steps:
    drop the step whose removal lowers the held-out loss most, while one does. The lowest-loss
    subset seen is kept when it beats the base solver by more than ``tau`` and by more than GATE_Z
    standard errors of the per-sample loss differences (the seeds are paired, so this is the noise
    of the held-out estimate); otherwise nothing is kept.
    """
    k, use_xT = basis
    losses: dict[tuple[int, ...], Tensor] = {}

    def held_out(subset: tuple[int, ...]) -> float:
        if subset not in losses:
            kept = {i: corrected[i] for i in subset}
            losses[subset] = held_out_losses(
                PASCorrection(kept, use_xT, steps, k) if kept else None)
        return float(losses[subset].mean())

    base = held_out(())
    current = tuple(sorted(corrected))
    while len(current) > 1:
        smaller = min(
            (tuple(s for s in current if s != drop) for drop in current), key=held_out
        )
        if held_out(smaller) >= held_out(current):
            break
        current = smaller
    if current:
        held_out(current)
    # Fewer corrected steps win ties.
    best = min((s for s in losses if s), key=lambda s: (held_out(s), len(s)), default=())
    gain = losses[()] - losses[best]
    margin = max(tau, GATE_Z * float(gain.std() / math.sqrt(len(gain)))) if len(gain) > 1 else tau
    kept = best if best and float(gain.mean()) > margin else ()
    record = {
        "base": base,
        "searched": held_out(tuple(sorted(corrected))),
        "kept": list(kept),
        "kept_loss": held_out(kept),
        "margin": margin,
        "candidates": [{"steps": list(s), "loss": held_out(s)} for s in losses],
    }
    return {i: corrected[i] for i in kept}, record


def holdout_count(trajectories: int, holdout: float) -> int:
    """Held-out seeds for ``trajectories`` fit seeds: holdout x trajectories, at least MIN_HOLDOUT."""
    return max(MIN_HOLDOUT, math.ceil(holdout * trajectories))


def teacher_seeds(trajectories: int, validate: bool = True, holdout: float = 0.1) -> range:
    """The teacher seeds of a fit: ``trajectories`` for the search, then the held-out ones."""
    held = holdout_count(trajectories, holdout) if validate else 0
    return range(TEACHER_SEED_START, TEACHER_SEED_START + trajectories + held)


def _student_times(denoiser, solver: str, nfe: int, schedule, options: dict[str, Any]):
    """(schedule name or None, rho, float64 times) of the student's grid; ``options`` resolved."""
    name = solvers.REGISTRY[solver].default_schedule if schedule is None else schedule
    times = solvers.schedule_for(denoiser, solver, nfe, name, **options)
    return (name if isinstance(name, str) else None), float(options["rho"]), times


def student_request(
    denoiser,
    solver: str,
    nfe: int,
    *,
    schedule: str | Tensor | Sequence[float] | None = None,
    teacher_nfe: int = 100,
    **solver_options: Any,
) -> TeacherRequest:
    """What the teacher must provide for a fit of ``solver`` at ``nfe`` (see pas.teacher)."""
    options = solvers.get_solver(solver).resolve(solver_options)
    name, rho, times = _student_times(denoiser, solver, nfe, schedule, options)
    return TeacherRequest.for_student(denoiser, times, name, rho, teacher_nfe)


def _check_settings(solver: str, integers: dict[str, int], reals: dict[str, float]) -> None:
    if solvers.get_solver(solver).stages != 1:
        raise ValueError(
            f"PAS cannot correct {solver}: it spends several NFE per step; "
            "use a one-evaluation-per-step solver ("
            + ", ".join(n for n, spec in solvers.REGISTRY.items() if spec.stages == 1)
            + ")"
        )
    for name, value in integers.items():
        low = 0 if name == "early_stop" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not reals["lr"] > 0:
        raise ValueError(f"lr must be positive, got {reals['lr']!r}")
    for name in ("tau_first", "tau", "holdout"):
        if not reals[name] >= 0:
            raise ValueError(f"{name} must be >= 0, got {reals[name]!r}")


def _search(student: Student, teach, seeds: Sequence[int], chunk: int, basis: tuple[int, bool],
            search: Search, cache_dir: Path, where: tuple, clock: Clock, bar: tqdm) -> None:
    """Run ``search`` on the trajectories of ``seeds``, streamed in chunks through a scratch
    file in the cache (pas.stream; deleted when the search ends)."""
    device, dtype = where
    steps = len(student.times) - 1
    layout = scratch_layout(steps, basis[0], history_size(student))
    dim = math.prod(student.denoiser.shape)

    def targets(i: int, part: slice) -> Tensor:
        return teach.states(student.times[i + 1 : i + 2], part)[0]

    with scratch_file(cache_dir / "scratch", len(seeds), dim, dtype, layout) as scratch:
        stream = StudentStream(student, seeds, targets, scratch,
                               chunk_slices(len(seeds), chunk), basis, device, dtype)
        search.run(stream, clock, bar)


def _held_out_losses(student: Student, teach, seeds: Sequence[int], trajectories: int,
                     chunk: int, loss: str, where: tuple, hook) -> Tensor:
    """Per-sample final-state losses of the held-out seeds (those after ``trajectories``),
    sampled with ``hook`` chunk by chunk."""
    device, dtype = where
    losses = []
    for part in chunk_slices(len(seeds) - trajectories, chunk):
        held = slice(trajectories + part.start, trajectories + part.stop)
        latents, labels = solvers.latents_for_seeds(
            seeds[held], student.denoiser.shape, dtype=dtype, device=device,
            label_dim=student.denoiser.label_dim)
        final = teach.states(student.times[-1:], held)[0].to(device=device, dtype=dtype)
        losses.append(per_sample_loss(loss, student.run(latents, labels, hook) - final))
    return torch.cat(losses)


def fit(
    denoiser,
    solver: str,
    nfe: int,
    *,
    schedule: str | Tensor | Sequence[float] | None = None,
    trajectories: int = 5000,
    teacher_nfe: int = 100,
    teacher: str = "heun",
    k: int = 4,
    use_xT: bool = True,
    loss: str = "L1",
    optimizer: str = "exact",
    lr: float = 0.01,
    epochs: int = 1000,
    early_stop: int = 10,
    tau_first: float = 1e-4,
    tau: float = 1e-4,
    validate: bool = True,
    holdout: float = 0.1,
    batch_size: int = 256,
    chunk: int | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    dataset: str | None = None,
    progress: bool = True,
    **solver_options: Any,
) -> PASArtifact:
    """Fit PAS coordinates for ``solver`` at ``nfe`` on ``denoiser`` (pas-spec §0 and §6).

    The teacher (Heun, ~``teacher_nfe`` NFE, on the student's own schedule or a finer shared grid
    already in the cache) runs on seeds 10,000,000.. (disjoint from evaluation seeds): the first
    ``trajectories`` for the search, and with ``validate`` ``holdout_count(trajectories, holdout)``
    more for the gate. ``optimizer``: "exact" (the loss's minimiser) or "adam" (the reference's
    loop, with ``lr``, ``epochs``, ``early_stop``). ``device`` and ``dtype`` default to the
    denoiser's ``device``/``dtype`` attributes, else CPU float32.

    The trajectories are followed ``chunk`` at a time (pas.stream; default: as many as take about
    1 GiB of working set on the CPU, or a quarter of a CUDA device's memory, see pas.memory), so
    memory grows with the chunk, not with ``trajectories``. The artifact records the fit's peak
    memory.
    """
    loss = loss_name(loss)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown PAS optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    _check_settings(
        solver,
        {"k": k, "trajectories": trajectories, "teacher_nfe": teacher_nfe, "epochs": epochs,
         "early_stop": early_stop, "batch_size": batch_size,
         **({"chunk": chunk} if chunk is not None else {})},
        {"lr": lr, "tau_first": tau_first, "tau": tau, "holdout": holdout},
    )
    spec = solvers.get_solver(solver)
    options = spec.resolve(solver_options)
    device = device if device is not None else getattr(denoiser, "device", "cpu")
    dtype = dtype if dtype is not None else getattr(denoiser, "dtype", torch.float32)
    schedule_name, rho, times = _student_times(denoiser, solver, nfe, schedule, options)
    seeds = teacher_seeds(trajectories, validate, holdout)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    teach = teacher_states(
        denoiser,
        [TeacherRequest.for_student(denoiser, times, schedule_name, rho, teacher_nfe)],
        seeds=seeds,
        teacher=teacher,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        cache_dir=cache,
        progress=progress,
    )
    settings = FitSettings(loss=loss, optimizer=optimizer, lr=lr, epochs=epochs,
                           early_stop=early_stop)
    clock = Clock()
    student = Student(ChunkedDenoiser(denoiser, batch_size, clock), solver, nfe, times,
                      solver_options)
    chunk = chunk or default_chunk(denoiser.shape, len(times) - 1, k, dtype, device)
    search = Search(settings, (tau_first, tau))
    began = time.perf_counter()
    with PeakMemory(device) as peak:
        with tqdm(total=len(times) - 1, desc="PAS fit", unit="step",
                  disable=None if progress else True) as bar:
            _search(student, teach, seeds[:trajectories], chunk, (k, use_xT), search, cache,
                    (device, dtype), clock, bar)
        corrected, validation = search.corrected, None
        if validate:
            gate_began = time.perf_counter()
            rest = slice(trajectories, None)
            held_out = partial(_held_out_losses, student, teach, seeds, trajectories, chunk,
                               loss, (device, dtype))
            corrected, validation = _gate(held_out, search.corrected, (k, use_xT),
                                          len(times) - 1, tau)
            validation["seeds"] = seed_range(seeds[rest])
            clock.add("gate", gate_began)
    fit_seconds = time.perf_counter() - began
    return PASArtifact(
        dataset=dataset or denoiser.name,
        model=denoiser.name,
        solver=spec.name,
        nfe=nfe,
        num_steps=len(times) - 1,
        options=options,
        schedule=schedule_name,
        rho=rho,
        sigma_min=float(denoiser.sigma_min),
        sigma_max=float(denoiser.sigma_max),
        times=times.tolist(),
        k=k,
        use_xT=use_xT,
        corrected=corrected,
        search=search.search,
        loss=loss,
        optimizer=optimizer,
        lr=lr,
        epochs=epochs,
        early_stop=early_stop,
        tau_first=tau_first,
        tau=tau,
        validate=validate,
        holdout=holdout,
        validation=validation,
        teacher={
            "solver": teacher,
            "nfe": teacher_nfe,
            "actual_nfe": teach.nfe,
            "grid_points": len(teach.grid),
            "trajectories": trajectories,
            "seeds": seed_range(seeds[:trajectories]),
            "cached": teach.cached,
            "generation_seconds": teach.generation_seconds,
        },
        fit_seconds=fit_seconds,
        fit_parts=dict(clock.parts),
        teacher_seconds=teach.seconds,
        dtype=str(dtype).removeprefix("torch."),
        chunk=min(chunk, len(seeds)),
        memory=peak.record(),
    )
