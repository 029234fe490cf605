"""iPNDM: fixed Adams-Bashforth weights on the raw d's (solvers-spec section 4.1)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .stepper import Model, Stepper, lincomb

# Constant-step Adams-Bashforth weights of d_i, d_{i-1}, ..., newest first.
AB_WEIGHTS = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class IPNDM(Stepper):
    """Order ramps up min(order, i+1) from the history of raw d's at reached states."""

    def __init__(self, model: Model, times: list[float], options: Mapping[str, Any]):
        super().__init__(model, times, options)
        self.order = options["order"]
        self.history: deque[Tensor] = deque(maxlen=self.order)

    def direction(self, i: int, x: Tensor) -> Tensor:
        self.history.append(self.raw_direction(i, x))
        weights = AB_WEIGHTS[min(self.order, i + 1)]
        return lincomb(zip(weights, reversed(self.history)))
