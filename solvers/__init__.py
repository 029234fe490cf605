"""Diffusion ODE solvers in EDM's convention: time schedules, the solver registry, sampling."""

from .context import Correction, StepContext
from .registry import REGISTRY, SolverSpec, get_solver, solver_names
from .sampling import make_stepper, sample, schedule_for
from .schedules import get_schedule, schedule_names
from .seeds import latents_for_seeds
from .unipc import unipc_coefficients

__all__ = [
    "REGISTRY",
    "Correction",
    "SolverSpec",
    "StepContext",
    "get_schedule",
    "get_solver",
    "latents_for_seeds",
    "make_stepper",
    "sample",
    "schedule_for",
    "schedule_names",
    "solver_names",
    "unipc_coefficients",
]
