"""Schedules against solvers-spec 1.6's float64 vectors, the embedding property, discrete."""

import math

import pytest
import torch

from solvers import get_schedule, schedule_names

REFERENCE = {  # solvers-spec section 1.6 (sigma_min = 0.002, sigma_max = 80)
    ("polynomial", 7, 5): [80, 24.408341787, 5.8389476310, 0.96541692633, 0.085087202689, 0.002],
    ("polynomial", 7, 6): [
        80,
        30.183258055,
        9.7232013553,
        2.5152189761,
        0.46997905800,
        0.051532394323,
        0.002,
    ],
    ("polynomial", 7, 8): [
        80,
        39.016684794,
        17.527831965,
        7.1005098338,
        2.5152189761,
        0.74337913367,
        0.16975275627,
        0.026054998890,
        0.002,
    ],
    ("polynomial", 7, 10): [
        80,
        45.313734075,
        24.408341787,
        12.381576139,
        5.8389476310,
        2.5152189761,
        0.96541692633,
        0.31828328884,
        0.085087202689,
        0.016720753235,
        0.002,
    ],
    ("logsnr", 7, 5): [80, 9.6089954719, 1.1541599247, 0.13862896863, 0.016651064148, 0.002],
    ("logsnr", 7, 6): [
        80,
        13.679807573,
        2.3392141906,
        0.4,
        0.068399037867,
        0.011696070953,
        0.002,
    ],
    ("time_uniform", 1, 5): [80, 16.506206333, 4.7463379579, 1.7541111734, 0.65021590508, 0.002],
    ("time_uniform", 2, 5): [80, 6.2923395659, 1.5599652447, 0.55600241851, 0.15034264359, 0.002],
}


@pytest.mark.parametrize("key", list(REFERENCE), ids=lambda k: f"{k[0]}-rho{k[1]}-N{k[2]}")
def test_reference_vectors(key):
    name, rho, n = key
    t = get_schedule(name, n + 1, 0.002, 80.0, rho=rho)
    assert t.dtype == torch.float64
    torch.testing.assert_close(
        t, torch.tensor(REFERENCE[key], dtype=torch.float64), rtol=1e-9, atol=0
    )


def linear_beta_alphas_cumprod(m: int = 1000) -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, m, dtype=torch.float64), 0)


def sigma_of_tau(tau: float, abar: torch.Tensor) -> float:
    """Direct evaluation of section 1.4's sigma(tau) at a keypoint tau = n / M."""
    n = round(tau * len(abar))
    return math.sqrt(1 / abar[n - 1].item() - 1)


@pytest.mark.parametrize("n,m", [(5, 3), (8, 9), (3, 1)])
@pytest.mark.parametrize(
    "name,rho",
    [
        ("polynomial", 7),
        ("logsnr", 7),
        ("time_uniform", 1),
        ("time_uniform", 2),
        ("discrete", 1),
        ("discrete", 3),
    ],
)
def test_embedding(name, rho, n, m):
    extra = {"alphas_cumprod": linear_beta_alphas_cumprod()} if name == "discrete" else {}
    coarse = get_schedule(name, n + 1, 0.002, 80.0, rho=rho, **extra)
    fine = get_schedule(name, n * (m + 1) + 1, 0.002, 80.0, rho=rho, **extra)
    torch.testing.assert_close(fine[:: m + 1], coarse, rtol=1e-12, atol=0)
    assert bool((fine[1:] < fine[:-1]).all())


def test_discrete_endpoints_and_keypoints():
    abar = linear_beta_alphas_cumprod()
    # The network's own range: sigma at the first and the last keypoint.
    lo, hi = sigma_of_tau(1e-3, abar), sigma_of_tau(1.0, abar)
    t = get_schedule("discrete", 11, lo, hi, rho=1, alphas_cumprod=abar)
    assert t[0].item() == pytest.approx(hi, rel=1e-9)
    assert t[-1].item() == pytest.approx(lo, rel=1e-9)
    # rho = 1 is uniform in tau from 1 to 1e-3: t_5 sits at tau = 0.5005, between keypoints
    # 500 and 501, where log(alpha) is interpolated linearly.
    la = 0.5 * torch.log(abar)
    log_alpha = 0.5 * (la[499] + la[500]).item()
    assert t[5].item() == pytest.approx(math.sqrt(math.expm1(-2 * log_alpha)), rel=1e-9)
    # EDM's sigma_min is below the first keypoint: the map is extrapolated, still hitting it.
    t = get_schedule("discrete", 11, 0.002, 80.0, rho=1, alphas_cumprod=abar)
    assert (t[0].item(), t[-1].item()) == (
        pytest.approx(80, rel=1e-9),
        pytest.approx(0.002, rel=1e-9),
    )


def test_discrete_tau_max_quirk():
    """tau_max is not raised to 1/rho: for rho = 2 the first point is sigma(tau_max^2)."""
    abar = linear_beta_alphas_cumprod()
    lo, hi = sigma_of_tau(1e-3, abar), sigma_of_tau(1.0, abar)
    t = get_schedule("discrete", 6, lo, hi, rho=2, alphas_cumprod=abar)
    assert t[0].item() == pytest.approx(hi, rel=1e-9)  # tau_max = 1 hides the quirk
    t = get_schedule("discrete", 6, lo, sigma_of_tau(0.5, abar), rho=2, alphas_cumprod=abar)
    assert t[0].item() == pytest.approx(sigma_of_tau(0.25, abar), rel=1e-9)
    assert t[-1].item() == pytest.approx(lo, rel=1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown schedule 'karras'; valid: polynomial, logsnr"):
        get_schedule("karras", 5, 0.002, 80.0)
    with pytest.raises(ValueError, match="needs the model's alphas_cumprod"):
        get_schedule("discrete", 5, 0.002, 80.0)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        get_schedule("logsnr", 1, 0.002, 80.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        get_schedule("logsnr", 5, 80.0, 0.002)
    assert schedule_names() == ["polynomial", "logsnr", "time_uniform", "discrete"]
