"""Orders of accuracy: Gaussian convergence slopes, per-step exactness on polynomial data,
UniPC's coefficient vectors (solvers-spec A.1), thresholding."""

import math

import numpy as np
import pytest
import torch
from solver_helpers import GaussianDenoiser, latents

from solvers import REGISTRY, get_schedule, sample, unipc_coefficients
from solvers.dpmpp import dpmpp_weights
from solvers.thresholding import dynamic_threshold, sample_quantile
from solvers.unipc import unipc_plan

# (solver, options, schedule, rho, sigma range, design order).
# iPNDM's constant Adams-Bashforth weights reach their order only on uniform steps in t
# (polynomial rho=1). The multistep warm-up (lower orders on the first steps) leaves an error
# proportional to dD/dlambda at t_0, about s^2/t_0; t_0 = 1000 makes it negligible next to
# the main steps' error. DPM-Solver++ order 3 is second order: the reference's D2 term is half
# the Taylor term (see test_dpmpp_third_order_halves_the_second_derivative_term).
# UniPC's corrector raises the order by one. iPNDM-v and DEIS take variable steps (polynomial
# rho=3); starting at t_0 = 100 keeps their warm-up error below the main steps' at these N.
ORDERS = [
    ("ddim", {}, "polynomial", 7, (0.5, 10.0), 1),
    ("heun", {}, "polynomial", 7, (0.5, 10.0), 2),
    ("dpm2", {}, "polynomial", 7, (0.5, 10.0), 2),
    *[("ipndm", {"order": k}, "polynomial", 1, (0.5, 10.0), k) for k in (1, 2, 3, 4)],
    *[("ipndm_v", {"order": k, "variant": "exact"}, "polynomial", 3, (0.5, 100.0), k)
      for k in (1, 2, 3, 4)],
    *[("deis", {"order": k}, "polynomial", 3, (0.5, 100.0), k) for k in (1, 2, 3, 4)],
    *[
        ("dpmpp", {"order": k, "lower_order_final": False}, "logsnr", 7, (0.2, 1e3), min(k, 2))
        for k in (1, 2, 3)
    ],
    *[
        (
            "unipc",
            {"order": k, "variant": v, "lower_order_final": False},
            "logsnr",
            7,
            (0.2, 1e3),
            k + 1,
        )
        for v in ("bh1", "bh2")
        for k in (1, 2, 3)
    ],
]


def convergence_slope(name, opts, schedule, rho, limits, steps=(64, 128, 256)):
    """(slope of log error against log N, errors) on the closed-form Gaussian."""
    lo, hi = limits
    den = GaussianDenoiser()
    z = latents()
    exact = den.solution(hi * z, hi, lo)
    errors = []
    for n in steps:
        times = get_schedule(schedule, n + 1, lo, hi, rho=rho)
        nfe = REGISTRY[name].stages * n
        errors.append((sample(den, z, name, nfe, times, **opts) - exact).norm().item())
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0], errors


@pytest.mark.parametrize("name,opts,schedule,rho,limits,order", ORDERS, ids=lambda v: str(v))
def test_convergence_order(name, opts, schedule, rho, limits, order):
    slope, errors = convergence_slope(name, opts, schedule, rho, limits)
    assert slope >= order - 0.3, (errors, slope)


@pytest.mark.parametrize(
    "name,opts,schedule,rho,limits,steps",
    [
        # iPNDM's constant weights on the variable steps where iPNDM-v reaches order 4.
        ("ipndm", {"order": 4}, "polynomial", 3, (0.5, 100.0), (64, 128, 256)),
        # The toolbox's coded iPNDM-v order 4 on EDM's range and schedule (its default).
        ("ipndm_v", {"variant": "toolbox"}, "polynomial", 7, (0.002, 80.0), (256, 512, 1024)),
    ],
    ids=str,
)
def test_constant_or_toolbox_weights_lose_orders_on_variable_steps(
    name, opts, schedule, rho, limits, steps
):
    slope, errors = convergence_slope(name, opts, schedule, rho, limits, steps)
    assert slope < 2.3, (errors, slope)
    exact_slope, _ = convergence_slope("ipndm_v", {"variant": "exact"}, schedule, rho, limits, steps)
    assert exact_slope > 3.7


@pytest.mark.parametrize("name,nfe,bound", [("ddim", 1000, 1e-2), ("heun", 1000, 2e-4)])
def test_closed_form_at_large_nfe(name, nfe, bound):
    """On EDM's default range and schedule the final samples match the exact ODE solution."""
    den = GaussianDenoiser()
    z = latents()
    exact = den.solution(80.0 * z, 80.0, 0.002)
    err = (sample(den, z, name, nfe) - exact).abs().max().item()
    err_half = (sample(den, z, name, nfe // 2) - exact).abs().max().item()
    assert err < bound
    ratio = err_half / err  # 2^order
    assert ratio == pytest.approx(2 if name == "ddim" else 4, rel=0.05)


# One step on polynomial-free data: m(lambda) = exp(0.8 lambda), independent of x, so that
# x_{i+1} = (t_{i+1}/t_i) x_i + t_{i+1} int e^lambda m dlambda exactly. Nodes lambda_{i-2},
# lambda_{i-1}, lambda_i = 0 and the target lambda_{i+1}, non-uniform, scaled by `scale`.
NODES = (-0.45, -0.2, 0.0, 0.3)
X_CUR = 0.7
SCALES = (0.5, 0.25, 0.125)


def m_of(lam):
    return math.exp(0.8 * lam)


def exact_step(nodes):
    t_cur, t_next = math.exp(-nodes[2]), math.exp(-nodes[3])
    integral = (math.exp(1.8 * nodes[3]) - math.exp(1.8 * nodes[2])) / 1.8
    return t_next / t_cur * X_CUR + t_next * integral


def local_order(step):
    """Slope of log|one-step error| against log h: the local order (global order + 1).

    ``step(nodes)`` returns x_{i+1} from x_i = X_CUR and the m's at ``nodes``."""
    errors = []
    for scale in SCALES:
        nodes = [scale * lam for lam in NODES]
        errors.append(abs(step(nodes) - exact_step(nodes)))
    return np.polyfit(np.log(SCALES), np.log(errors), 1)[0]


def advance(nodes, a, weights, extra=()):
    """x_i + delta (a x_i + sum_k w_k m_{i-k} + sum w m(lambda) over (w, lambda) in extra)."""
    t_cur, t_next = math.exp(-nodes[2]), math.exp(-nodes[3])
    d = a * X_CUR + sum(w * m_of(nodes[2 - k]) for k, w in enumerate(weights))
    d += sum(w * m_of(lam) for w, lam in extra)
    return X_CUR + (t_next - t_cur) * d


def times_of(nodes, order):
    return [math.exp(-lam) for lam in nodes[3 - order :]]


@pytest.mark.parametrize("order,local", [(1, 2), (2, 3), (3, 3)])
def test_dpmpp_local_order(order, local):
    def step(nodes):
        return advance(nodes, *dpmpp_weights(times_of(nodes, order)))

    assert local_order(step) == pytest.approx(local, abs=0.1)


def test_dpmpp_third_order_halves_the_second_derivative_term():
    """Reference parity: for m = lambda^2 the 3M step errs by exactly h^2 phi_3 (its D2 is
    h^2 m''/2 but enters with phi_3 instead of 2 phi_3), so it is second order overall."""
    a, c = dpmpp_weights(times_of(NODES, 3))
    t_cur, t_next = 1.0, math.exp(-NODES[3])
    d = a * X_CUR + sum(w * NODES[2 - k] ** 2 for k, w in enumerate(c))
    # int_0^h e^(lambda - h) lambda^2 dlambda
    h = NODES[3]
    exact = t_next * X_CUR + (h**2 - 2 * h + 2 - 2 * math.exp(-h))
    phi3 = (math.expm1(-h) / h + 1) / h - 0.5
    assert X_CUR + (t_next - t_cur) * d - exact == pytest.approx(h**2 * phi3, rel=1e-9)


# UniPC: the predictor of order p has local order p+1, the corrector p+2 (global p+1).
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_local_order(variant, order):
    def predictor(nodes):
        plan = unipc_plan(times_of(nodes, order), variant, corrector=True)
        return advance(nodes, plan.a, plan.pred)

    def corrector(nodes):
        plan = unipc_plan(times_of(nodes, order), variant, corrector=True)
        weights = [p + c for p, c in zip(plan.pred, plan.corr)]
        return advance(nodes, plan.a, weights, [(plan.corr_next, nodes[3])])

    assert local_order(predictor) == pytest.approx(order + 1, abs=0.1)
    assert local_order(corrector) == pytest.approx(order + 2, abs=0.1)


A1 = {  # solvers-spec A.1: times 4, 2, 1 -> 0.5
    ("bh1", 1): (-0.6931471806, [0.4020105504], [], [0.5]),
    ("bh1", 2): (-0.6931471806, [0.4020105504, 0.2827377860], [0.5], [0.0596363822, 0.3423741682]),
    ("bh1", 3): (
        -0.6931471806,
        [0.4020105504, 0.2827377860, 0.2189818355],
        [1.0867588868, -0.6847483364],
        [0.1511507396, -0.0610095716, 0.3118693824],
    ),
    ("bh2", 1): (-0.5, [0.5573049591], [], [0.5]),
    ("bh2", 2): (-0.5, [0.5573049591, 0.3919577985], [0.5], [0.0826735803, 0.4746313788]),
    ("bh2", 3): (
        -0.5,
        [0.5573049591, 0.3919577985, 0.3035732838],
        [1.5065677167, -0.9492627576],
        [0.2095394180, -0.0845772251, 0.4323427662],
    ),
}


@pytest.mark.parametrize("key", list(A1), ids=str)
def test_unipc_coefficients_match_a1(key):
    variant, order = key
    got = unipc_coefficients([4.0, 2.0, 1.0, 0.5][3 - order :], variant)
    want = A1[key]
    assert got.B_h == pytest.approx(want[0], abs=1e-10)
    for g, w in zip(got[1:], want[1:]):
        assert len(g) == len(w)
        assert g == pytest.approx(w, abs=1e-10)


def test_quantile_matches_torch_quantile():
    x = torch.randn(5, 3, 7, 9, dtype=torch.float64).abs()
    for q in (0.0, 0.5, 0.995, 1.0):
        want = torch.quantile(x.reshape(5, -1), q, dim=1)
        torch.testing.assert_close(sample_quantile(x, q), want, rtol=1e-14, atol=0)


def test_dynamic_threshold():
    small = torch.linspace(-0.9, 0.9, 1000, dtype=torch.float64)
    big = small * 3  # 0.995-quantile of |big| is 2.6865...
    out = dynamic_threshold(torch.stack([small, big]))
    assert torch.equal(out[0], small)  # s = max(q, 1) = 1: unchanged
    s = torch.quantile(big.abs(), 0.995)
    torch.testing.assert_close(out[1], big.clamp(-s, s) / s, rtol=1e-15, atol=0)
    assert out[1].abs().max() == 1
