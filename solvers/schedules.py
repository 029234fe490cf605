"""Time schedules t_0 = sigma_max > ... > t_N = sigma_min (solvers-spec section 1), in float64.

Each schedule is linear in a warped coordinate of s_k = k / (K - 1). s_k is computed as an exact
integer divided by K - 1, so the schedule with K' = N(M+1)+1 points contains the one with K = N+1
points bit for bit at indices i(M+1) (the embedding property PAS's teacher relies on).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

F64 = torch.float64
# The VP time interval of the time_uniform schedule is [EPS_S, 1] (section 1.3).
EPS_S = 1e-3


def _unit_grid(num_steps: int) -> Tensor:
    return torch.arange(num_steps, dtype=F64) / (num_steps - 1)


def polynomial(s: Tensor, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """EDM's schedule: uniform in t^(1/rho)."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + s * (lo - hi)) ** rho


def logsnr(s: Tensor, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """Uniform in lambda = -log t (rho is ignored)."""
    lam_lo, lam_hi = -math.log(sigma_max), -math.log(sigma_min)
    return torch.exp(-(lam_lo + s * (lam_hi - lam_lo)))


def vp_fit(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """(beta_d, beta_min) of the VP schedule sigma_VP(tau) = sqrt(exp(beta_d tau^2 / 2 +
    beta_min tau) - 1) that maps VP time [EPS_S, 1] onto [sigma_min, sigma_max]."""
    log_min, log_max = math.log1p(sigma_min**2), math.log1p(sigma_max**2)
    beta_d = 2 * (log_min / EPS_S - log_max) / (EPS_S - 1)
    return beta_d, log_max - beta_d / 2


def vp_time(sigma: np.ndarray, beta_d: float, beta_min: float) -> np.ndarray:
    """sigma_VP^-1(sigma), the VP time of noise level sigma (elementwise)."""
    return (np.sqrt(beta_min**2 + 2 * beta_d * np.log1p(np.square(sigma))) - beta_min) / beta_d


def time_uniform(s: Tensor, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """Uniform in VP time tau^(1/rho), with a VP schedule fitted to map [EPS_S, 1] onto the range."""
    beta_d, beta_min = vp_fit(sigma_min, sigma_max)
    tau = (1 + s * (EPS_S ** (1 / rho) - 1)) ** rho
    return torch.sqrt(torch.expm1(beta_d / 2 * tau**2 + beta_min * tau))


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation on increasing xp, extrapolated with the outer segments."""
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def discrete(
    s: Tensor, sigma_min: float, sigma_max: float, rho: float, alphas_cumprod: Tensor
) -> Tensor:
    """LDM's schedule from the model's alphas_cumprod (section 1.4), with the reference's quirk:
    tau_max is not raised to 1/rho, which matters only for rho != 1."""
    abar = torch.as_tensor(alphas_cumprod, dtype=F64).flatten()
    tau_keys = torch.arange(1, len(abar) + 1, dtype=F64) / len(abar)
    # log(alpha) decreases with tau; flip so that it can serve as the increasing abscissa.
    log_alpha_keys = (0.5 * torch.log(abar)).flip(0)
    tau_of_log_alpha = tau_keys.flip(0)

    def tau_of_sigma(sigma: float) -> Tensor:
        log_alpha = torch.tensor([-0.5 * math.log1p(sigma**2)], dtype=F64)
        return _interp(log_alpha, log_alpha_keys, tau_of_log_alpha)[0]

    tau_max, tau_min = tau_of_sigma(sigma_max), tau_of_sigma(sigma_min)
    tau = (tau_max + s * (tau_min ** (1 / rho) - tau_max)) ** rho
    log_alpha = _interp(tau, tau_keys, 0.5 * torch.log(abar))
    return torch.sqrt(torch.expm1(-2 * log_alpha))


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "polynomial": polynomial,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "discrete": discrete,
}


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def get_schedule(
    name: str,
    num_steps: int,
    sigma_min: float,
    sigma_max: float,
    *,
    rho: float = 7.0,
    alphas_cumprod: Tensor | Sequence[float] | None = None,
) -> Tensor:
    """``num_steps`` float64 times decreasing from sigma_max to sigma_min.

    ``rho`` is used by polynomial, time_uniform and discrete; ``alphas_cumprod`` (the model's
    discrete VP schedule) is required by, and only allowed with, ``discrete``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (got {num_steps!r})")
    sigma_min, sigma_max, rho = float(sigma_min), float(sigma_max), float(rho)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
    if not rho > 0:
        raise ValueError(f"rho must be positive (got {rho})")
    s = _unit_grid(num_steps)
    if name == "discrete":
        if alphas_cumprod is None:
            raise ValueError("the discrete schedule needs the model's alphas_cumprod")
        return discrete(s, sigma_min, sigma_max, rho, alphas_cumprod)
    if alphas_cumprod is not None:
        raise ValueError(f"alphas_cumprod is only used by the discrete schedule, not {name!r}")
    t = SCHEDULES[name](s, sigma_min, sigma_max, rho)
    # The endpoints are exact in exact arithmetic; pin them so that x_0 = sigma_max * latents.
    t[0], t[-1] = sigma_max, sigma_min
    return t
