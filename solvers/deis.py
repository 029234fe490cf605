"""DEIS (solvers-spec section 4.3, docs/solvers-extra.md section 3): linear multistep on the raw
d's with weights from integrating a Lagrange interpolant of d over the step.

tAB interpolates in VP time tau (the toolbox's sigma -> tau map, always fitted to EDM's 0.002/80
with eps_s = 1e-3); rhoAB interpolates in t = sigma itself, which is the exact variable-step
Adams-Bashforth rule of iPNDM-v.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .ipndm import (
    LinearMultistep,
    StepWeights,
    adams_bashforth_weights,
    lagrange_integrals,
    ramped,
)
from .schedules import vp_fit, vp_time

VARIANTS = ("tab", "rhoab")
TAU_FIT = vp_fit(0.002, 80.0)  # (beta_d, beta_min) of the toolbox's edm2t, whatever the model
# Gauss-Legendre in log t on [0, 1]. The integrand is analytic in a strip of half-width pi/2
# around the real log-t axis, so 64 points reach float64 rounding on any step up to
# log(80 / 0.002) long (checked against adaptive quadrature in the tests).
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
LOG_T_RULE = ((_NODES + 1) / 2, _WEIGHTS / 2)


def tab_weights(times: Sequence[float]) -> list[float]:
    """w_j = C_{i,j} / delta_i with C_{i,j} = int_{tau_i}^{tau_{i+1}} sigma_VP'(tau) L_j(tau) dtau,
    L_j the Lagrange basis on tau_i, tau_{i-1}, ... (newest first).

    Substituting t = sigma_VP(tau) gives C_{i,j} = int_{t_i}^{t_{i+1}} L_j(tau(t)) dt, integrated
    in log t. ``times`` = (t_{i-p+1}, ..., t_i, t_{i+1}); the order p is len(times) - 1.
    """
    t_cur, t_next = times[-2], times[-1]
    log_ratio = math.log(t_next / t_cur)
    s, w = LOG_T_RULE
    t = t_cur * np.exp(log_ratio * s)
    # dt = t log(t_{i+1}/t_i) ds; divided by delta_i the weights integrate 1 (to rounding).
    weights = w * t * (log_ratio / (t_next - t_cur))
    nodes = vp_time(np.asarray(times[-2::-1], dtype=np.float64), *TAU_FIT)
    return lagrange_integrals(nodes, vp_time(t, *TAU_FIT), weights)


@lru_cache(maxsize=64)
def deis_weights(times: tuple[float, ...], order: int, variant: str) -> StepWeights:
    """Every step's DEIS weights w_{i,j} = C_{i,j} / delta_i, computed once per schedule."""
    return ramped(times, order, tab_weights if variant == "tab" else adams_bashforth_weights)


class DEIS(LinearMultistep):
    """d~_i = sum_j C_{i,j} d_{i-j} / delta_i."""

    def step_weights(self, times, options):
        return deis_weights(times, options["order"], options["variant"])
