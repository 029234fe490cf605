"""The step context handed to a correction hook (architecture.md, Solvers contract)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class StepContext:
    """Everything a correction may look at when step ``index`` is about to be taken.

    The step is ``x_next = x_cur + (t_next - t_cur) * d_used`` where ``d_used`` is what the
    correction returns; ``direction`` is the solver's own (uncorrected) effective direction.
    """

    index: int
    num_steps: int
    t_cur: Tensor
    t_next: Tensor
    x_cur: Tensor
    direction: Tensor
    x_T: Tensor
    used: tuple[Tensor, ...]


Correction = Callable[[StepContext], Tensor]
