"""The fitted PAS model: a self-describing JSON file (decision 0.9)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import solvers
from pas.basis import BasisTracker
from pas.cache import atomic_write
from solvers.context import StepContext

FORMAT_VERSION = 2


@dataclass(frozen=True)
class StepSearch:
    """What the search found at one step: its losses before/after fitting, the decision and the
    fitted coordinates (kept for every step, so a gate's choice can be replayed)."""

    index: int
    n_coords: int
    loss_before: float
    loss_after: float
    accepted: bool
    epochs: int
    coords: list[float]


class PASCorrection:
    """The correction hook for ``solvers.sample``: corrected steps use sum_j c_j u_j.

    A step with q stored coordinates uses the first q rows of the basis, as in the fit. Steps
    without coordinates return the solver's own direction untouched, so an empty correction
    samples bit-identically to the base solver.
    """

    def __init__(self, corrected: dict[int, list[float]], use_xT: bool, num_steps: int, k: int):
        self.coords = {i: torch.tensor(c, dtype=torch.float64) for i, c in corrected.items()}
        self.tracker = BasisTracker(k, use_xT)
        self.num_steps = num_steps

    def __call__(self, ctx: StepContext) -> Tensor:
        if ctx.num_steps != self.num_steps:
            raise ValueError(
                f"PAS artifact was fitted for {self.num_steps} steps, "
                f"the solver takes {ctx.num_steps}"
            )
        coords = self.coords.get(ctx.index)
        if coords is None:
            return ctx.direction
        return self.tracker.corrected(ctx, coords)


def _same_times(a: Sequence[float], b: Sequence[float]) -> bool:
    # A float32 schedule is the float64 one rounded (~1e-7); other schedules differ far more.
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b))


@dataclass
class PASArtifact:
    """Everything needed to sample with PAS and to know where the numbers came from."""

    dataset: str
    model: str
    solver: str
    nfe: int
    num_steps: int
    options: dict[str, Any]
    schedule: str | None
    rho: float
    sigma_min: float
    sigma_max: float
    times: list[float]
    k: int
    use_xT: bool
    corrected: dict[int, list[float]]
    search: list[StepSearch]
    loss: str
    optimizer: str
    lr: float
    epochs: int
    early_stop: int
    tau_first: float
    tau: float
    validate: bool
    holdout: float
    validation: dict[str, Any] | None
    teacher: dict[str, Any]
    fit_seconds: float
    fit_parts: dict[str, float]
    teacher_seconds: float
    dtype: str
    # Trajectories per chunk and the fit's peak memory (pas.memory.PeakMemory.record); artifacts
    # written before they existed lack them.
    chunk: int | None = None
    memory: dict[str, Any] | None = None
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def n_params(self) -> int:
        """The number of learned numbers: coordinates over all corrected steps."""
        return sum(len(c) for c in self.corrected.values())

    @property
    def holdout_gain(self) -> float | None:
        """Relative drop of the held-out final-state loss, base -> kept (None without the gate)."""
        if not self.validation or not self.validation["base"]:
            return None
        return 1.0 - self.validation["kept_loss"] / self.validation["base"]

    def correction(self) -> PASCorrection:
        """The callable to pass as ``solvers.sample(..., correction=...)``."""
        return PASCorrection(self.corrected, self.use_xT, self.num_steps, self.k)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["corrected"] = {str(i): c for i, c in sorted(self.corrected.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PASArtifact:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"unsupported PAS artifact format_version {version!r} (expected {FORMAT_VERSION})"
            )
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)
        if missing:
            raise ValueError(f"PAS artifact lacks fields: {', '.join(sorted(missing))}")
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["corrected"] = {int(i): [float(x) for x in c] for i, c in data["corrected"].items()}
        values["search"] = [StepSearch(**s) for s in data["search"]]
        return cls(**values)

    def save(self, path: str | Path) -> None:
        """Write readable JSON atomically (a reader never sees a half-written file)."""
        text = json.dumps(self.to_json(), indent=2)
        atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))

    @classmethod
    def load(cls, path: str | Path) -> PASArtifact:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a PAS artifact (invalid JSON: {err.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a PAS artifact (not a JSON object)")  # noqa: TRY004
        return cls.from_json(data)

    def check_compatible(
        self,
        solver: str,
        nfe: int,
        schedule: str | Tensor | Sequence[float] | None = None,
        dataset: str | None = None,
        **options: Any,
    ) -> None:
        """Raise ValueError, saying what differs, unless sampling with these settings fits."""
        spec = solvers.get_solver(solver)
        where = f"PAS artifact fitted for {self.solver} at NFE {self.nfe} on {self.dataset}"
        if spec.name != self.solver:
            raise ValueError(f"{where}: cannot be used with solver {solver}")
        if nfe != self.nfe:
            raise ValueError(f"{where}: cannot be used at NFE {nfe}")
        if dataset is not None and dataset != self.dataset:
            raise ValueError(f"{where}: cannot be used on dataset {dataset}")
        resolved = spec.resolve(options)
        for key in sorted(set(resolved) | set(self.options)):
            if resolved.get(key) != self.options.get(key):
                raise ValueError(
                    f"{where} with {key}={self.options.get(key)!r}: "
                    f"cannot be used with {key}={resolved.get(key)!r}"
                )
        schedule = spec.default_schedule if schedule is None else schedule
        same_name = isinstance(schedule, str) and schedule == self.schedule
        if not same_name and not _same_times(self._times_for(schedule, resolved), self.times):
            raise ValueError(
                f"{where} on the {self.schedule or 'given'} schedule: the schedule differs"
            )

    def _times_for(
        self, schedule: str | Tensor | Sequence[float], options: dict[str, Any]
    ) -> list[float]:
        if isinstance(schedule, str):
            rho = options.get("rho", self.rho)
            times = solvers.get_schedule(
                schedule, self.num_steps + 1, self.sigma_min, self.sigma_max, rho=rho
            )
            return times.tolist()
        return [float(t) for t in schedule]
