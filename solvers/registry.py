"""The solver registry: names, defaults, allowed options and the NFE -> steps rule."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import deis, unipc
from .deis import DEIS
from .dpmpp import DPMpp
from .ipndm import IPNDM, IPNDM_V_VARIANTS, IPNDMv
from .onestep import DDIM, DPM2, Heun
from .stepper import Model, Stepper
from .unipc import UniPC

# Options every solver takes (rho shapes the schedule; section 2 for afs and denoise_to_zero).
COMMON_DEFAULTS: dict[str, Any] = {"rho": 7.0, "afs": False, "denoise_to_zero": False}
BOOL_OPTIONS = ("afs", "denoise_to_zero", "lower_order_final", "thresholding")


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver. ``defaults`` holds every option it takes, with its default value."""

    name: str
    description: str
    default_schedule: str
    defaults: dict[str, Any]
    stepper: Callable[[Model, list[float], Mapping[str, Any]], Stepper] = field(repr=False)
    stages: int = 1  # denoiser calls per step
    max_order: int | None = None
    variants: tuple[str, ...] = ()  # the values option ``variant`` takes

    @property
    def options(self) -> frozenset[str]:
        return frozenset(self.defaults)

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated with ``options``, checked; ValueError on a bad name or value."""
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise ValueError(
                f"{self.name} does not take option {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(self.options))}"
            )
        merged = {**self.defaults, **options}
        for key, value in merged.items():
            self._check(key, value)
        return merged

    def _check(self, key: str, value: Any) -> None:
        if key in BOOL_OPTIONS and not isinstance(value, bool):
            raise ValueError(f"option {key} must be True or False (got {value!r})")
        if key == "rho" and (not _is_real(value) or value <= 0):
            raise ValueError(f"option rho must be a positive number (got {value!r})")
        if key == "order" and (not _is_integer(value) or not 1 <= value <= self.max_order):
            raise ValueError(
                f"{self.name} order must be an integer in 1..{self.max_order} (got {value!r})"
            )
        if key == "variant" and value not in self.variants:
            raise ValueError(
                f"{self.name} variant must be one of {', '.join(self.variants)} (got {value!r})"
            )

    def steps_for_nfe(self, nfe: int, **options: Any) -> int:
        """Number of steps N that makes exactly ``nfe`` denoiser calls with these options.

        nfe = stages * N - afs + denoise_to_zero, with N >= 1 and nfe >= 1.
        """
        opts = self.resolve(options)
        offset = int(opts["denoise_to_zero"]) - int(opts["afs"])
        if _is_integer(nfe) and nfe >= 1:
            steps, rest = divmod(int(nfe) - offset, self.stages)
            if rest == 0 and steps >= 1:
                return steps
        # The smallest valid nfe: one step, or two where one step would need no call at all.
        first = self.stages + offset if self.stages + offset >= 1 else 2 * self.stages + offset
        kind = "an" if self.stages == 1 else ("an even" if first % 2 == 0 else "an odd")
        needs = f"{kind} nfe >= {first}"
        flags = [f"{k}=True" for k in ("afs", "denoise_to_zero") if opts[k]]
        if flags:
            needs += f" with {' and '.join(flags)}"
        raise ValueError(f"{self.name} needs {needs} (got {nfe!r})")


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _spec(
    name: str,
    description: str,
    schedule: str,
    stepper: Callable,
    *,
    stages: int = 1,
    max_order: int | None = None,
    variants: tuple[str, ...] = (),
    **option_defaults: Any,
) -> SolverSpec:
    defaults = {**COMMON_DEFAULTS, **option_defaults}
    return SolverSpec(name, description, schedule, defaults, stepper, stages, max_order, variants)


_SPECS = [
    _spec("ddim", "Euler / DDIM (eta=0): first order, 1 NFE per step", "polynomial", DDIM),
    _spec(
        "heun", "EDM's Heun: second order, 2 NFE per step (even nfe)", "polynomial", Heun, stages=2
    ),
    _spec(
        "dpm2",
        "DPM-Solver-2: midpoint at the geometric mean of the step, 2 NFE per step (even nfe)",
        "polynomial",
        DPM2,
        stages=2,
    ),
    _spec(
        "ipndm",
        "iPNDM: constant-weight Adams-Bashforth on d, orders 1-4",
        "polynomial",
        IPNDM,
        order=4,
        max_order=4,
    ),
    _spec(
        "ipndm_v",
        "iPNDM-v: variable-step Adams-Bashforth on d, orders 1-4",
        "polynomial",
        IPNDMv,
        order=4,
        variant="toolbox",
        max_order=4,
        variants=IPNDM_V_VARIANTS,
    ),
    _spec(
        "deis",
        "DEIS: multistep on d integrating its Lagrange interpolant in VP time (tab) or t (rhoab)",
        "time_uniform",
        DEIS,
        order=4,
        variant="tab",
        rho=2.0,
        max_order=4,
        variants=deis.VARIANTS,
    ),
    _spec(
        "dpmpp",
        "DPM-Solver++ multistep, data prediction, orders 1-3",
        "logsnr",
        DPMpp,
        order=3,
        lower_order_final=True,
        thresholding=False,
        max_order=3,
    ),
    _spec(
        "unipc",
        "UniPC (UniP + UniC corrector, no extra NFE), data prediction, orders 1-3",
        "logsnr",
        UniPC,
        order=3,
        variant="bh2",
        lower_order_final=True,
        thresholding=False,
        max_order=3,
        variants=unipc.VARIANTS,
    ),
]
ALIASES = {"euler": "ddim"}

REGISTRY: dict[str, SolverSpec] = {spec.name: spec for spec in _SPECS}
REGISTRY.update({alias: REGISTRY[target] for alias, target in ALIASES.items()})


def solver_names() -> list[str]:
    """The registered solvers, without aliases."""
    return [spec.name for spec in _SPECS]


def get_solver(name: str) -> SolverSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown solver {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name]
