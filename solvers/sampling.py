"""The sampling driver: one loop for every solver, with or without a correction hook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .context import Correction, StepContext
from .registry import SolverSpec, get_solver
from .schedules import get_schedule
from .stepper import Stepper

# EDM's range, used when a denoiser does not carry its own sigma_min / sigma_max.
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

Denoiser = Callable[..., Tensor]


def sample(
    denoiser: Denoiser,
    latents: Tensor,
    solver: str,
    nfe: int,
    schedule: str | Tensor | Sequence[float] | None = None,
    *,
    correction: Correction | None = None,
    class_labels: Tensor | None = None,
    return_trajectory: bool = False,
    **options: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate the probability-flow ODE from x_0 = t_0 * latents with exactly ``nfe`` denoiser calls.

    ``schedule``: None (the solver's default), a schedule name, or N+1 explicit times used verbatim.
    Each step is x_{i+1} = x_i + (t_{i+1} - t_i) d, where d is the solver's effective direction,
    or what ``correction`` returns for it. Returns x_N (D(x_N, t_N) with denoise_to_zero), and
    with ``return_trajectory`` also the states x_0..x_N as one [N+1, B, *shape] tensor.
    """
    _check_latents(latents)
    spec, opts, times = _plan(denoiser, solver, nfe, schedule, options)
    num_steps = len(times) - 1
    ts = times.to(device=latents.device, dtype=latents.dtype)
    stepper = make_stepper(denoiser, spec, opts, ts, class_labels)
    tf = stepper.t  # Python floats (make_stepper's one device sync): all per-step coefficient math
    traj = latents.new_empty((num_steps + 1, *latents.shape)) if return_trajectory else None
    x_T = torch.mul(latents, tf[0], out=None if traj is None else traj[0])
    x = x_T
    used: list[Tensor] = []
    for i in range(num_steps):
        d = stepper.direction(i, x)
        if correction is not None:
            ctx = StepContext(i, num_steps, ts[i], ts[i + 1], x, d, x_T, tuple(used))
            d = _checked(correction(ctx), x)
            used.append(d)
        x = torch.add(x, d, alpha=tf[i + 1] - tf[i], out=None if traj is None else traj[i + 1])
    if opts["denoise_to_zero"]:
        x = stepper.model(x, tf[-1])
    return (x, traj) if return_trajectory else x


def make_stepper(
    denoiser: Denoiser,
    spec: SolverSpec,
    opts: dict[str, Any],
    ts: Tensor,
    class_labels: Tensor | None = None,
) -> Stepper:
    """A fresh stepper of ``spec`` over the times ``ts`` (in the latents' dtype and device),
    calling ``denoiser`` with ``class_labels``; ``opts`` are resolved options."""
    tf = ts.tolist()
    # The schedule's own 0-d tensors; an off-grid level (DPM-2's midpoint) gets a new one.
    levels = dict(zip(tf, ts))

    def model(x: Tensor, t: float) -> Tensor:
        sigma = levels.get(t)
        if sigma is None:
            sigma = torch.tensor(t, dtype=ts.dtype, device=ts.device)
        if class_labels is None:
            return denoiser(x, sigma)
        return denoiser(x, sigma, class_labels)

    return spec.stepper(model, tf, opts)


def schedule_for(
    denoiser: Denoiser,
    solver: str,
    nfe: int,
    schedule: str | Tensor | Sequence[float] | None = None,
    **options: Any,
) -> Tensor:
    """The N+1 float64 times ``sample`` steps through for the same arguments.

    PAS builds its teacher grid around these; ``sample`` casts them to the latents' dtype.
    """
    return _plan(denoiser, solver, nfe, schedule, options)[2]


def _plan(
    denoiser: Denoiser,
    solver: str,
    nfe: int,
    schedule: str | Tensor | Sequence[float] | None,
    options: dict[str, Any],
) -> tuple[SolverSpec, dict[str, Any], Tensor]:
    """The solver, its checked options and the float64 times, or ValueError."""
    spec = get_solver(solver)
    opts = spec.resolve(options)
    num_steps = spec.steps_for_nfe(nfe, **opts)
    return spec, opts, _times(denoiser, spec, schedule, num_steps, opts)


def _times(
    denoiser: Denoiser,
    spec: SolverSpec,
    schedule: str | Tensor | Sequence[float] | None,
    num_steps: int,
    opts: dict[str, Any],
) -> Tensor:
    """The N+1 float64 schedule times."""
    if schedule is None or isinstance(schedule, str):
        name = schedule or spec.default_schedule
        return get_schedule(
            name,
            num_steps + 1,
            getattr(denoiser, "sigma_min", SIGMA_MIN),
            getattr(denoiser, "sigma_max", SIGMA_MAX),
            rho=opts["rho"],
            alphas_cumprod=getattr(denoiser, "alphas_cumprod", None)
            if name == "discrete"
            else None,
        )
    if not isinstance(schedule, Tensor):
        schedule = torch.as_tensor(schedule, dtype=torch.float64)
    times = schedule.detach().to(device="cpu", dtype=torch.float64)
    if times.shape != (num_steps + 1,):
        raise ValueError(
            f"an explicit schedule for {spec.name} at this nfe needs {num_steps + 1} times "
            f"(N+1 for N={num_steps} steps), got shape {tuple(times.shape)}"
        )
    if not (times[-1] > 0 and bool((times[1:] < times[:-1]).all())):
        raise ValueError("an explicit schedule must be positive and strictly decreasing")
    return times


def _check_latents(latents: Tensor) -> None:
    if not isinstance(latents, Tensor) or not latents.is_floating_point():
        got = latents.dtype if isinstance(latents, Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a floating-point tensor, got {got}")
    if latents.dim() < 2:
        raise ValueError(
            f"latents must be [B, *shape] with a batch dimension, got shape {tuple(latents.shape)}"
        )


def _checked(direction: Tensor, x: Tensor) -> Tensor:
    if (
        not isinstance(direction, Tensor)
        or direction.shape != x.shape
        or direction.dtype != x.dtype
    ):
        got = (
            (tuple(direction.shape), direction.dtype)
            if isinstance(direction, Tensor)
            else direction
        )
        raise ValueError(
            f"a correction must return a tensor of shape {tuple(x.shape)} and dtype {x.dtype}, "
            f"got {got}"
        )
    return direction
