"""Adams-Bashforth on the raw d's: iPNDM's constant weights and iPNDM-v's variable-step weights
(solvers-spec sections 4.1 and 4.2, docs/solvers-extra.md section 2)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from torch import Tensor

from .stepper import Model, Stepper, lincomb

# Constant-step Adams-Bashforth weights of d_i, d_{i-1}, ..., newest first.
AB_WEIGHTS = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
# "toolbox" (the default) is what the published iPNDM-v numbers use; "exact" is the exact
# variable-step AB rule, more accurate only from about NFE 80 on EDM's range (solvers-extra 2).
IPNDM_V_VARIANTS = ("toolbox", "exact")
StepWeights = tuple[tuple[float, ...], ...]
"""Per step i, the weights of d_i, d_{i-1}, ... (newest first)."""
# Gauss-Legendre on [0, 1]: exact for the polynomials of degree <= 7 that variable-step AB
# integrates (degree <= 3).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(4)
GL_UNIT = ((_GL_NODES + 1) / 2, _GL_WEIGHTS / 2)


def lagrange_integrals(
    nodes: Sequence[float], points: np.ndarray, weights: np.ndarray
) -> list[float]:
    """sum_q weights_q L_j(points_q) for each Lagrange basis polynomial L_j of ``nodes``.

    For a quadrature normalised to integrate 1 to 1, the exact integrals sum to 1 (the L_j sum
    to 1), so the first entry is set to 1 minus the others: rows sum to 1 to rounding whatever
    the quadrature's own error, and a single node gives exactly (1.0,).
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    out = []
    for j in range(1, len(nodes)):
        others = np.delete(nodes, j)
        basis = np.prod((points[:, None] - others) / (nodes[j] - others), axis=1)
        out.append(float(weights @ basis))
    return [1.0 - sum(out), *out]


def adams_bashforth_weights(times: Sequence[float]) -> list[float]:
    """Exact variable-step AB: w_j = (1/delta_i) int_{t_i}^{t_{i+1}} L_j(t) dt for the Lagrange
    basis on t_i, t_{i-1}, ..., so that d~_i = sum_j w_j d_{i-j} (newest first).

    ``times`` = (t_{i-p+1}, ..., t_i, t_{i+1}); the order p is len(times) - 1.
    """
    t_cur, delta = times[-2], times[-1] - times[-2]
    # In s = (t - t_i) / delta the step is [0, 1] and node k sits at (t_{i-k} - t_i) / delta.
    nodes = [(t - t_cur) / delta for t in reversed(times[:-1])]
    return lagrange_integrals(nodes, *GL_UNIT)


def toolbox_ipndm_v_weights(times: Sequence[float]) -> list[float]:
    """The reference toolbox's iPNDM-v weights, as coded (solvers-spec 4.2): exact AB2 at order
    2; at order 3 not the AB3 interpolant; at order 4 not AB4 even at constant steps, and rows
    that sum to 1 only when consecutive step ratios are equal (docs/solvers-extra.md 2)."""
    order = len(times) - 1
    if order == 1:
        return [1.0]
    steps = np.diff(times)[::-1]  # a = delta_i, b = delta_{i-1}, c, e
    a, b = steps[0], steps[1]
    w = [1 + a / (2 * b), -a / (2 * b)]
    if order == 2:
        return w
    c = steps[2]
    t1 = (1 - a / (3 * (a + b)) * (a * (a + b)) / (b * (b + c))) / 2
    w = [w[0] + t1, w[1] - (1 + b / c) * t1, t1 * b / c]
    if order == 3:
        return w
    e = steps[3]
    t2 = ((1 - a / (3 * (a + b))) / 2 + (1 - a / (2 * (a + b))) * a / (6 * (a + b + c))) * (
        a * (a + b) * (a + b + c) / (b * (b + c) * (b + c + e))
    )
    q = b * (b + c) / (c * (c + e))
    return [
        w[0] + t2,
        w[1] - (1 + b / c + q) * t2,
        w[2] + (b / c + q * (1 + c / e)) * t2,
        -t2 * q * b / c,
    ]


def ramped(times: Sequence[float], order: int, rule: Callable) -> StepWeights:
    """rule(t_{i-p+1}, ..., t_i, t_{i+1}) for every step i, with p = min(order, i+1)."""
    return tuple(
        tuple(map(float, rule(times[max(0, i + 1 - order) : i + 2])))
        for i in range(len(times) - 1)
    )


@lru_cache(maxsize=64)
def ipndm_v_weights(times: tuple[float, ...], order: int, variant: str) -> StepWeights:
    """Every step's iPNDM-v weights, computed once per schedule."""
    rule = adams_bashforth_weights if variant == "exact" else toolbox_ipndm_v_weights
    return ramped(times, order, rule)


class LinearMultistep(Stepper):
    """d~_i = sum_j w_{i,j} d_{i-j} over the raw d's at reached states (newest first), with the
    order ramping up as min(order, i+1). Subclasses give every step's weights."""

    def __init__(self, model: Model, times: list[float], options: Mapping[str, Any]):
        super().__init__(model, times, options)
        self.history: deque[Tensor] = deque(maxlen=options["order"])
        self.weights = self.step_weights(tuple(times), options)

    def step_weights(
        self, times: tuple[float, ...], options: Mapping[str, Any]
    ) -> Sequence[Sequence[float]]:
        raise NotImplementedError

    def direction(self, i: int, x: Tensor) -> Tensor:
        self.history.append(self.raw_direction(i, x))
        return lincomb(zip(self.weights[i], reversed(self.history)))


class IPNDM(LinearMultistep):
    """Constant-step AB weights, applied whatever the steps."""

    def step_weights(self, times, options):
        return [AB_WEIGHTS[min(options["order"], i + 1)] for i in range(len(times) - 1)]


class IPNDMv(LinearMultistep):
    """Variable-step AB weights: the toolbox's coded formulas (default) or the exact rule."""

    def step_weights(self, times, options):
        return ipndm_v_weights(times, options["order"], options["variant"])
