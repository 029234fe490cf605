"""DPM-Solver++ multistep in data-prediction form (solvers-spec section 5)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from .stepper import Model, Stepper, lincomb


def multistep_order(i: int, num_steps: int, max_order: int, lower_order_final: bool) -> int:
    """Warm-up through lower orders; with lower_order_final also wind down over the last steps."""
    if i + 1 < max_order:
        return i + 1
    return min(max_order, num_steps - i) if lower_order_final else max_order


def dpmpp_weights(times: Sequence[float]) -> tuple[float, list[float]]:
    """(a, c) with d~_i = a x_i + sum_k c_k m_{i-k} for one DPM-Solver++ step (section 5.4).

    ``times`` = (t_{i-p+1}, ..., t_i, t_{i+1}); the order p is len(times) - 1.
    """
    order = len(times) - 1
    t_cur, t_next = times[-2], times[-1]
    lam = [-math.log(t) for t in times]
    h = lam[-1] - lam[-2]
    phi1 = math.expm1(-h)
    m = np.eye(3)  # m[k] picks m_{i-k}: coefficient vectors of the history entries
    extra = np.zeros(3)  # x_{i+1} minus its first-order (DDIM) part
    if order == 2:
        r0 = (lam[-2] - lam[-3]) / h
        extra = -0.5 * phi1 * (m[0] - m[1]) / r0
    elif order == 3:
        r0, r1 = (lam[-2] - lam[-3]) / h, (lam[-3] - lam[-4]) / h
        d1_0, d1_1 = (m[0] - m[1]) / r0, (m[1] - m[2]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi2 = phi1 / h + 1
        phi3 = phi2 / h - 0.5
        extra = phi2 * d1 - phi3 * d2
    c = extra / (t_next - t_cur)
    c[0] -= 1 / t_cur
    return 1 / t_cur, c[:order].tolist()


class DPMpp(Stepper):
    """History: the last max_order thresholded data predictions m at reached states."""

    def __init__(self, model: Model, times: list[float], options: Mapping[str, Any]):
        super().__init__(model, times, options)
        orders = [
            multistep_order(i, self.num_steps, options["order"], options["lower_order_final"])
            for i in range(self.num_steps)
        ]
        self.weights = [dpmpp_weights(times[i + 1 - p : i + 2]) for i, p in enumerate(orders)]
        self.history: deque[Tensor] = deque(maxlen=options["order"])

    def direction(self, i: int, x: Tensor) -> Tensor:
        self.history.append(self.data(i, x))
        a, c = self.weights[i]
        return lincomb([(a, x), *zip(c, reversed(self.history))])
