"""Multistep weights of iPNDM-v and DEIS against independent checks: closed forms, exactness on
polynomials, the spec's test vectors (solvers-spec A.2, A.3) and adaptive quadrature."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from solver_helpers import GaussianDenoiser, latents

from solvers import get_schedule, sample
from solvers.deis import deis_weights, tab_weights
from solvers.ipndm import AB_WEIGHTS, adams_bashforth_weights, toolbox_ipndm_v_weights

# t_{i-3}, ..., t_i, t_{i+1}: unequal steps.
UNEQUAL = (10.0, 9.0, 7.7, 6.9, 5.0)


def step_mean(times, k):
    """(1/delta_i) int_{t_i}^{t_{i+1}} t^k dt."""
    a, b = times[-2], times[-1]
    return (b ** (k + 1) - a ** (k + 1)) / (k + 1) / (b - a)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_variable_step_ab_integrates_polynomials_exactly(order):
    times = UNEQUAL[4 - order :]
    w = adams_bashforth_weights(times)
    nodes = times[-2::-1]
    for k in range(order):
        got = sum(wj * t**k for wj, t in zip(w, nodes))
        assert got == pytest.approx(step_mean(times, k), rel=1e-13)
    constant = adams_bashforth_weights([float(n) for n in range(order + 1, -1, -1)][-order - 1 :])
    assert constant == pytest.approx(AB_WEIGHTS[order], rel=1e-13)


def test_variable_step_ab_closed_forms():
    """AB2 and AB3 in the step ratios (solvers-spec 4.2, with the exact T1*)."""
    a, b, c = np.diff(UNEQUAL[1:])[::-1]
    t1 = a * (2 * a + 3 * b) / (6 * b * (b + c))
    ab3 = [1 + a / (2 * b) + t1, -a / (2 * b) - (1 + b / c) * t1, t1 * b / c]
    assert adams_bashforth_weights(UNEQUAL[1:]) == pytest.approx(ab3, rel=1e-13)
    ab2 = [1 + a / (2 * b), -a / (2 * b)]
    assert adams_bashforth_weights(UNEQUAL[2:]) == pytest.approx(ab2, rel=1e-13)


def test_toolbox_ipndm_v_weights():
    """solvers-spec A.3 at constant steps; exact AB2; not the AB3 interpolant on unequal steps;
    order-4 rows that do not sum to 1 on EDM's polynomial schedule."""
    assert toolbox_ipndm_v_weights([3.0, 2.0, 1.0, 0.0]) == pytest.approx(
        [23 / 12, -16 / 12, 5 / 12], rel=1e-14
    )
    assert toolbox_ipndm_v_weights([4.0, 3.0, 2.0, 1.0, 0.0]) == pytest.approx(
        [57 / 24, -65 / 24, 43 / 24, -11 / 24], rel=1e-14
    )
    assert toolbox_ipndm_v_weights(UNEQUAL[2:]) == pytest.approx(
        adams_bashforth_weights(UNEQUAL[2:]), rel=1e-14
    )
    toolbox3 = toolbox_ipndm_v_weights(UNEQUAL[1:])
    assert sum(toolbox3) == pytest.approx(1, abs=1e-14)
    quadratic = sum(w * t**2 for w, t in zip(toolbox3, UNEQUAL[-2::-1]))
    assert abs(quadratic - step_mean(UNEQUAL, 2)) > 1
    t = get_schedule("polynomial", 6, 0.002, 80.0).tolist()
    assert sum(toolbox_ipndm_v_weights(t[0:5])) - 1 == pytest.approx(3.89e-5, rel=1e-2)


# solvers-spec A.2: C_{i,j} (exact integral) for polynomial rho=7, N = 5, max_order 4.
A2 = {
    1: [-28.59223168, 10.02283752],
    2: [-10.85239454, 10.72457410, -4.74571027],
    3: [-1.65068986, 2.27637149, -2.50618308, 1.00017173],
    4: [-0.09144182, 0.01190925, -0.00541067, 0.00185603],
}


def test_deis_tab_coefficients_match_a2():
    t = get_schedule("polynomial", 6, 0.002, 80.0).tolist()
    rows = deis_weights(tuple(t), 4, "tab")
    assert rows[0] == (1.0,)
    for i, want in A2.items():
        delta = t[i + 1] - t[i]
        assert [w * delta for w in rows[i]] == pytest.approx(want, abs=6e-9)
        assert sum(rows[i]) == pytest.approx(1, abs=1e-15)


def reference_tab(times):
    """C_{i,j} / delta_i by adaptive quadrature in VP time, with the toolbox's integrand
    -1/2 dlog(abar)/dtau / sqrt(abar (1 - abar)) and its own VP fit (solvers-spec 1.3)."""
    beta_d = 2 * (math.log1p(0.002**2) / 1e-3 - math.log1p(80.0**2)) / (1e-3 - 1)
    beta_min = math.log1p(80.0**2) - beta_d / 2
    assert beta_d == pytest.approx(17.537956987, rel=1e-10)
    assert beta_min == pytest.approx(-0.004768986, rel=1e-6)

    def tau(t):
        return (math.sqrt(beta_min**2 + 2 * beta_d * math.log(1 + t * t)) - beta_min) / beta_d

    def integrand(s):
        log_abar = -0.5 * beta_d * s * s - beta_min * s
        abar = math.exp(log_abar)
        return 0.5 * (beta_d * s + beta_min) / math.sqrt(abar * -math.expm1(log_abar))

    nodes = [tau(t) for t in times[-2::-1]]
    out = []
    for j, node in enumerate(nodes):
        others = nodes[:j] + nodes[j + 1 :]

        def f(s, node=node, others=others):
            return integrand(s) * math.prod((s - o) / (node - o) for o in others)

        value, _ = quad(f, tau(times[-2]), tau(times[-1]), epsabs=0, epsrel=1e-13, limit=200)
        out.append(value / (times[-1] - times[-2]))
    return out


@pytest.mark.parametrize(
    "schedule,rho,steps",
    [("polynomial", 7, 2), ("polynomial", 7, 5), ("polynomial", 7, 10), ("time_uniform", 2, 5),
     ("time_uniform", 1, 3), ("logsnr", 7, 8)],
    ids=str,
)
def test_deis_tab_agrees_with_adaptive_quadrature(schedule, rho, steps):
    t = get_schedule(schedule, steps + 1, 0.002, 80.0, rho=rho).tolist()
    for order in (2, 3, 4):
        for i, row in enumerate(deis_weights(tuple(t), order, "tab")):
            want = reference_tab(t[i + 1 - len(row) : i + 2])
            assert len(row) == min(order, i + 1)
            np.testing.assert_allclose(row, want, rtol=0, atol=1e-10 * max(map(abs, want)))


def test_deis_order_1_is_ddim_and_rhoab_is_ipndm_v():
    den, z = GaussianDenoiser(s=0.5), latents(4, (3,))
    times = get_schedule("time_uniform", 7, 0.002, 80.0, rho=1)  # uniform in VP time
    ddim = sample(den, z, "ddim", 6, times)
    assert torch.equal(sample(den, z, "deis", 6, times, order=1), ddim)
    for order in (1, 2, 3, 4):
        rhoab = sample(den, z, "deis", 6, times, order=order, variant="rhoab")
        exact = sample(den, z, "ipndm_v", 6, times, order=order, variant="exact")
        assert torch.equal(rhoab, exact)
    # tAB is not rhoAB: interpolating in VP time is another method.
    tab = sample(den, z, "deis", 6, times, order=2)
    assert (tab - sample(den, z, "deis", 6, times, order=2, variant="rhoab")).abs().max() > 1e-3


def test_deis_weights_are_computed_once_per_schedule():
    den = GaussianDenoiser()
    times = get_schedule("time_uniform", 10, 0.002, 80.0, rho=2).tolist()
    deis_weights.cache_clear()
    for batch in range(3):
        sample(den, latents(2, (4,), seed=batch), "deis", 9, times)
    info = deis_weights.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert tab_weights(times[:3]) == list(deis_weights(tuple(times), 4, "tab")[1])
