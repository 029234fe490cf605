"""UniPC (UniP predictor + UniC corrector) in data-prediction form (solvers-spec section 6)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .dpmpp import multistep_order
from .stepper import Model, Stepper, lincomb

VARIANTS = ("bh1", "bh2")


class UniPCCoefficients(NamedTuple):
    B_h: float
    b: list[float]
    rho_p: list[float]  # predictor weights of D1_1..D1_{p-1} (empty for p = 1)
    rho_c: list[float]  # corrector weights of D1_1..D1_{p-1} and D1_t
    r: list[float]  # r_1..r_{p-1}: (lambda_{i-k} - lambda_i) / h


def unipc_coefficients(times: Sequence[float], variant: str) -> UniPCCoefficients:
    """Section 6.1 for ``times`` = (t_{i-p+1}, ..., t_i, t_{i+1}); the order p is len(times) - 1."""
    p = len(times) - 1
    lam = [-math.log(t) for t in times]
    h = lam[-1] - lam[-2]
    hh = -h
    r = [(lam[-2 - k] - lam[-2]) / h for k in range(1, p)] + [1.0]
    B_h = hh if variant == "bh1" else math.expm1(hh)
    b, g = [], math.expm1(hh) / hh - 1
    for k in range(1, p + 1):
        b.append(math.factorial(k) * g / B_h)
        g = g / hh - 1 / math.factorial(k + 1)
    R = np.array([[rj ** (k - 1) for rj in r] for k in range(1, p + 1)])
    if p == 1:
        rho_p = []
    elif p == 2:
        rho_p = [0.5]
    else:
        rho_p = np.linalg.solve(R[: p - 1, : p - 1], b[: p - 1]).tolist()
    rho_c = [0.5] if p == 1 else np.linalg.solve(R, b).tolist()
    return UniPCCoefficients(B_h, b, rho_p, rho_c, r[:-1])


class UniPCPlan(NamedTuple):
    """Weights of one step: the predictor direction is d^P = a x_i + sum_k pred_k m_{i-k}; when
    the corrector is on, d~_i = d^P + sum_k corr_k m_{i-k} + corr_next m_{i+1}."""

    a: float
    pred: list[float]
    corrector: bool
    corr: list[float]
    corr_next: float


def unipc_plan(times: Sequence[float], variant: str, corrector: bool) -> UniPCPlan:
    """Section 6.4's directions as weights of x_i and the m's, for one step."""
    t_cur, t_next = times[-2], times[-1]
    co = unipc_coefficients(times, variant)
    scale = co.B_h / (t_next - t_cur)

    def weights(rho: Sequence[float]) -> list[float]:
        # -(B_h/delta) sum_k rho_k (m_{i-k} - m_i) / r_k, as weights of m_i, m_{i-1}, ...
        w = [0.0] + [-scale * rho_k / r_k for rho_k, r_k in zip(rho, co.r)]
        w[0] = -sum(w)
        return w

    pred = weights(co.rho_p)
    pred[0] -= 1 / t_cur
    corr_next = -scale * co.rho_c[-1]
    corr = weights(co.rho_c[:-1])
    corr[0] -= 1 / t_cur + corr_next
    corr = [c - q for c, q in zip(corr, pred)]
    return UniPCPlan(1 / t_cur, pred, corrector, corr, corr_next)


class UniPC(Stepper):
    """History: the last max_order data predictions; m_{i+1} is evaluated at the predicted state."""

    def __init__(self, model: Model, times: list[float], options: Mapping[str, Any]):
        super().__init__(model, times, options)
        n = self.num_steps
        order = options["order"]
        self.plans = []
        for i in range(n):
            p = multistep_order(i, n, order, options["lower_order_final"])
            # The corrector never runs after the last step: NFE = N for every N (decision 1).
            self.plans.append(unipc_plan(times[i + 1 - p : i + 2], options["variant"], i < n - 1))
        self.history: deque[Tensor] = deque(maxlen=order)

    def direction(self, i: int, x: Tensor) -> Tensor:
        if i == 0:
            self.history.append(self.data(0, x))
        plan = self.plans[i]
        ms = list(reversed(self.history))
        d = lincomb([(plan.a, x), *zip(plan.pred, ms)])
        if not plan.corrector:
            return d
        m_next = self.data(i + 1, torch.add(x, d, alpha=self.delta(i)))
        self.history.append(m_next)
        for coef, m in zip(plan.corr, ms):
            d.add_(m, alpha=coef)
        return d.add_(m_next, alpha=plan.corr_next)
