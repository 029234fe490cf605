"""The per-step rule every solver implements: its effective direction (solvers-spec section 7).

The driver (sampling.py) asks a Stepper for d~_i, lets a correction replace it, and takes the
step x_{i+1} = x_i + (t_{i+1} - t_i) d_used. A Stepper keeps its own history of raw model
quantities at the states actually reached; corrections never touch it. That ``history`` deque is
a Stepper's whole state between steps, so a run can be paused after any step and resumed by a
fresh Stepper whose history is refilled (pas fits trajectories chunk by chunk that way).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from .thresholding import dynamic_threshold

Model = Callable[[Tensor, float], Tensor]
"""model(x, t) = D(x, t): the denoiser at noise level t, a schedule time or DPM-2's midpoint."""


def lincomb(terms: Iterable[tuple[float, Tensor]]) -> Tensor:
    """sum(c * tensor) as a new tensor, one pass per term."""
    it = iter(terms)
    coef, first = next(it)
    out = first * coef
    for coef, tensor in it:
        out.add_(tensor, alpha=coef)
    return out


class Stepper:
    """Base class: one instance per sampling run, ``direction`` is called for i = 0..N-1."""

    def __init__(self, model: Model, times: list[float], options: Mapping[str, Any]):
        self.model = model
        self.t = times
        self.num_steps = len(times) - 1
        self.afs = options["afs"]
        self.thresholding = options.get("thresholding", False)
        # Multistep solvers replace this with a deque of their order; one-step solvers keep none.
        self.history: deque[Tensor] = deque(maxlen=0)

    def direction(self, i: int, x: Tensor) -> Tensor:
        """The solver's own effective direction d~_i at the reached state x = x_i."""
        raise NotImplementedError

    def delta(self, i: int) -> float:
        return self.t[i + 1] - self.t[i]

    def ode_direction(self, j: int, x: Tensor) -> Tensor:
        """d(x, t_j) = (x - D(x, t_j)) / t_j at schedule point j."""
        return self.ode_direction_at(self.t[j], x)

    def ode_direction_at(self, t: float, x: Tensor) -> Tensor:
        """d(x, t) = (x - D(x, t)) / t at any noise level t."""
        return (x - self.model(x, t)).div_(t)

    def raw_direction(self, i: int, x: Tensor) -> Tensor:
        """d(x_i, t_i), with AFS's analytic value replacing the model call at step 0 (section 2.1)."""
        if i == 0 and self.afs:
            return x * (1 / math.sqrt(1 + self.t[0] ** 2))
        return self.ode_direction(i, x)

    def data(self, j: int, x: Tensor) -> Tensor:
        """Data prediction at schedule point j as it enters a history: AFS at j = 0, then DT."""
        if j == 0 and self.afs:
            t0 = self.t[0]
            denoised = x * (1 - t0 / math.sqrt(1 + t0**2))
        else:
            denoised = self.model(x, self.t[j])
        return dynamic_threshold(denoised) if self.thresholding else denoised
