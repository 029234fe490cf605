"""DPM-Solver++ multistep in data-prediction form (solvers-spec section 5)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from .stepper import Model, Stepper, lincomb


def multistep_order(i: int, num_steps: int, max_order: int, lower_order_final: bool) -> int:
    """Warm-up through lower orders; with lower_order_final also wind down over the last steps."""
    if i + 1 < max_order:
        return i + 1
    return min(max_order, num_steps - i) if lower_order_final else max_order


def _log(t: float | Tensor) -> float | Tensor:
    return t.log() if isinstance(t, Tensor) else math.log(t)


def _expm1(h: float | Tensor) -> float | Tensor:
    return h.expm1() if isinstance(h, Tensor) else math.expm1(h)


def dpmpp_weights(
    times: Sequence[float | Tensor],
) -> tuple[float | Tensor, list[float | Tensor]]:
    """(a, c) with d~_i = a x_i + sum_k c_k m_{i-k} for one DPM-Solver++ step (section 5.4).

    ``times`` = (t_{i-p+1}, ..., t_i, t_{i+1}); the order p is len(times) - 1. Python floats give
    floats; any time may instead be a tensor (AMED's per-sample intermediate times), and then the
    weights are tensors that autograd can differentiate. c_k is written out per history entry.
    """
    order = len(times) - 1
    t_cur, t_next = times[-2], times[-1]
    lam = [-_log(t) for t in times]
    h = lam[-1] - lam[-2]
    phi1 = _expm1(-h)
    # extra[k]: the coefficient of m_{i-k} in x_{i+1} minus its first-order (DDIM) part.
    extra: list = [0.0]
    if order == 2:
        r0 = (lam[-2] - lam[-3]) / h
        e0 = -0.5 * phi1 / r0
        extra = [e0, -e0]
    elif order == 3:
        r0, r1 = (lam[-2] - lam[-3]) / h, (lam[-3] - lam[-4]) / h
        # D1_0 = (m_i - m_{i-1}) / r0 and D1_1 = (m_{i-1} - m_{i-2}) / r1, per entry.
        a, b = 1.0 / r0, 1.0 / r1
        diff = (a, -a - b, b)  # D1_0 - D1_1
        k = r0 / (r0 + r1)
        d1 = (a + k * diff[0], -a + k * diff[1], k * diff[2])
        d2 = [v / (r0 + r1) for v in diff]
        phi2 = phi1 / h + 1
        phi3 = phi2 / h - 0.5
        extra = [phi2 * u - phi3 * v for u, v in zip(d1, d2)]
    c = [e / (t_next - t_cur) for e in extra]
    c[0] = c[0] - 1 / t_cur
    return 1 / t_cur, c


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
