"""``pas.fit``: the adaptive search of pas-spec §6 with the decisions of §0.

The student solver runs once over all training latents with a *fitting* correction hook. At step i
the hook builds each sample's basis, fits the shared coordinates against the teacher's state at
t_{i+1}, decides whether the step is worth correcting, and returns the direction the solver should
use (corrected with the final coordinates, or its own). So the search follows exactly the recursion
that sampling will follow, for every solver that offers the hook, with no per-solver code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

import solvers
from pas.artifact import PASArtifact, StepSearch
from pas.basis import combine, n_coords, step_basis
from pas.cache import default_cache_dir
from pas.search import FitSettings, accept, fit_coords, loss_name, loss_value
from pas.teacher import TEACHER_SEED_START, seed_range, teacher_trajectories
from solvers.context import StepContext


class ChunkedDenoiser:
    """The same denoiser, called on at most ``batch_size`` samples at a time (bounds memory)."""

    def __init__(self, denoiser, batch_size: int):
        self.inner = denoiser
        self.batch_size = batch_size
        for name in ("name", "shape", "sigma_min", "sigma_max", "label_dim"):
            setattr(self, name, getattr(denoiser, name))

    def __call__(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if x.shape[0] <= self.batch_size:
            return self.inner(x, sigma, class_labels)
        parts = []
        for start in range(0, x.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            s = sigma[part] if sigma.ndim else sigma
            labels = class_labels[part] if class_labels is not None else None
            parts.append(self.inner(x[part], s, labels))
        return torch.cat(parts)


class FittingHook:
    """The correction hook that fits every step of one student run (pas-spec §6)."""

    def __init__(
        self,
        targets: Tensor,
        k: int,
        use_xT: bool,
        settings: FitSettings,
        tau_first: float,
        tau: float,
        bar: tqdm,
    ):
        self.targets = targets
        self.k = k
        self.use_xT = use_xT
        self.settings = settings
        self.tau_first = tau_first
        self.tau = tau
        self.search: list[StepSearch] = []
        self.corrected: dict[int, list[float]] = {}
        self.bar = bar

    def __call__(self, ctx: StepContext) -> Tensor:
        samples = ctx.x_cur.shape[0]
        x = ctx.x_cur.reshape(samples, -1)
        target = self.targets[ctx.index + 1].to(ctx.x_cur).reshape(samples, -1)
        # The solver steps with x + dt * d for a Python float dt; predict states the same way.
        dt = float(ctx.t_next) - float(ctx.t_cur)
        basis = step_basis(ctx, self.k, self.use_xT)
        basis = basis[:, : n_coords(basis)]
        direction = ctx.direction.reshape(samples, -1)
        before = loss_value(self.settings.loss, torch.add(x, direction, alpha=dt) - target).item()
        start = torch.zeros(basis.shape[1], dtype=x.dtype, device=x.device)
        start[0] = direction.norm(dim=1).mean()
        coords, epochs = fit_coords(x - target, basis, dt, start, self.settings)
        corrected = combine(basis, coords, ctx.direction)
        # The state the solver will reach with the stored coordinates, and its loss (decision 0.5).
        reached = torch.add(x, corrected.reshape(samples, -1), alpha=dt)
        after = loss_value(self.settings.loss, reached - target).item()
        tau = self.tau if self.corrected else self.tau_first
        accepted = accept(before, after, tau)
        self.search.append(StepSearch(ctx.index, basis.shape[1], before, after, accepted, epochs))
        if accepted:
            self.corrected[ctx.index] = coords.tolist()
        self.bar.update()
        self.bar.set_postfix(step=ctx.index, before=f"{before:.3g}", after=f"{after:.3g}")
        return corrected if accepted else ctx.direction


def _student_times(denoiser, solver: str, nfe: int, schedule, options: dict[str, Any]):
    """(schedule name or None, rho, float64 times) of the student's grid; ``options`` resolved."""
    name = solvers.REGISTRY[solver].default_schedule if schedule is None else schedule
    times = solvers.schedule_for(denoiser, solver, nfe, name, **options)
    return (name if isinstance(name, str) else None), float(options["rho"]), times


def _check_settings(
    solver: str,
    k: int,
    trajectories: int,
    teacher_nfe: int,
    epochs: int,
    early_stop: int,
    lr: float,
    tau_first: float,
    tau: float,
    batch_size: int,
) -> None:
    if solvers.get_solver(solver).stages != 1:
        raise ValueError(
            f"PAS cannot correct {solver}: it spends several NFE per step; "
            "use a one-evaluation-per-step solver (ddim, ipndm, dpmpp, unipc)"
        )
    for name, value, low in (
        ("k", k, 1),
        ("trajectories", trajectories, 1),
        ("teacher_nfe", teacher_nfe, 1),
        ("epochs", epochs, 1),
        ("early_stop", early_stop, 0),
        ("batch_size", batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not (tau_first >= 0 and tau >= 0):
        raise ValueError(f"tau_first and tau must be >= 0, got {tau_first!r}, {tau!r}")


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
    lr: float = 0.01,
    epochs: int = 1000,
    early_stop: int = 10,
    tau_first: float = 1e-4,
    tau: float = 1e-4,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    dataset: str | None = None,
    progress: bool = True,
    **solver_options: Any,
) -> PASArtifact:
    """Fit PAS coordinates for ``solver`` at ``nfe`` on ``denoiser`` (pas-spec §0 and §6).

    The teacher (Heun, ~``teacher_nfe`` NFE, on the student's own schedule) runs on seeds
    10,000,000.. (disjoint from evaluation seeds) and is cached under ``cache_dir``. ``device`` and
    ``dtype`` default to the denoiser's ``device``/``dtype`` attributes, else CPU float32.
    """
    loss = loss_name(loss)
    _check_settings(
        solver, k, trajectories, teacher_nfe, epochs, early_stop, lr, tau_first, tau, batch_size
    )
    spec = solvers.get_solver(solver)
    options = spec.resolve(solver_options)
    device = device if device is not None else getattr(denoiser, "device", "cpu")
    dtype = dtype if dtype is not None else getattr(denoiser, "dtype", torch.float32)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    schedule_name, rho, times = _student_times(denoiser, solver, nfe, schedule, options)
    seeds = range(TEACHER_SEED_START, TEACHER_SEED_START + trajectories)
    teach = teacher_trajectories(
        denoiser,
        times,
        schedule=schedule_name,
        rho=rho,
        seeds=seeds,
        teacher=teacher,
        teacher_nfe=teacher_nfe,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
    )
    settings = FitSettings(loss=loss, lr=lr, epochs=epochs, early_stop=early_stop)
    latents, labels = solvers.latents_for_seeds(
        seeds, denoiser.shape, dtype=dtype, device=device, label_dim=denoiser.label_dim
    )
    start = time.perf_counter()
    with tqdm(
        total=len(times) - 1, desc="PAS fit", unit="step", disable=None if progress else True
    ) as bar:
        hook = FittingHook(teach.states.to(device), k, use_xT, settings, tau_first, tau, bar)
        solvers.sample(
            ChunkedDenoiser(denoiser, batch_size),
            latents,
            solver,
            nfe,
            schedule=times,
            correction=hook,
            class_labels=labels,
            **solver_options,
        )
    fit_seconds = time.perf_counter() - start
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
        corrected=hook.corrected,
        search=hook.search,
        loss=loss,
        lr=lr,
        epochs=epochs,
        early_stop=early_stop,
        tau_first=tau_first,
        tau=tau,
        teacher={
            "solver": teacher,
            "nfe": teacher_nfe,
            "actual_nfe": 2 * (len(times) - 1) * (teach.config["inserted"] + 1),
            "inserted": teach.config["inserted"],
            "trajectories": trajectories,
            "seeds": seed_range(seeds),
            "cached": teach.cached,
            "generation_seconds": teach.generation_seconds,
        },
        fit_seconds=fit_seconds,
        teacher_seconds=teach.seconds,
        dtype=str(dtype).removeprefix("torch."),
    )
