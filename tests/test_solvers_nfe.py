"""Exact NFE: a counting denoiser proves nfe = denoiser calls for every solver setting."""

import itertools
import math

import pytest
import torch

from solvers import REGISTRY, sample, solver_names


class CountingDenoiser:
    """Shrinks towards 0.3; counts calls and checks the sigma it is given."""

    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self):
        self.calls = 0
        self.sigmas = []

    def __call__(self, x, sigma, class_labels=None):
        assert sigma.dim() == 0 and sigma.dtype == x.dtype
        self.calls += 1
        self.sigmas.append(sigma.item())
        return 0.3 + (x - 0.3) / (1 + sigma**2)


def settings():
    """(solver, options) for every order, variant and lower_order_final of each solver."""
    for name in solver_names():
        spec = REGISTRY[name]
        orders = range(1, spec.max_order + 1) if spec.max_order else [None]
        variants = spec.variants or [None]
        lofs = [True, False] if "lower_order_final" in spec.options else [None]
        for order, variant, lof in itertools.product(orders, variants, lofs):
            opts = {"order": order, "variant": variant, "lower_order_final": lof}
            yield name, {k: v for k, v in opts.items() if v is not None}


CASES = [
    (name, opts, afs, dtz)
    for name, opts in settings()
    for afs in (False, True)
    for dtz in (False, True)
]


@pytest.mark.parametrize("name,opts,afs,dtz", CASES, ids=lambda v: str(v))
def test_exact_nfe(name, opts, afs, dtz):
    spec = REGISTRY[name]
    latents = torch.randn(3, 2, dtype=torch.float64)
    offset = int(dtz) - int(afs)
    # N = 1..8: from below max_order to well above it.
    valid = [spec.stages * n + offset for n in range(1, 9) if spec.stages * n + offset >= 1]
    for nfe in valid:
        den = CountingDenoiser()
        x, traj = sample(
            den, latents, name, nfe, afs=afs, denoise_to_zero=dtz, return_trajectory=True, **opts
        )
        steps = spec.steps_for_nfe(nfe, afs=afs, denoise_to_zero=dtz)
        assert den.calls == nfe, (nfe, den.calls)
        assert traj.shape == (steps + 1, 3, 2)
        assert torch.equal(traj[0], latents * 80.0)
        if dtz:
            assert den.sigmas[-1] == pytest.approx(0.002)
        else:
            assert torch.equal(x, traj[-1])
    reachable = {spec.stages * n + offset for n in range(1, 20)} - {0}
    for nfe in sorted(set(range(12)) - reachable):
        with pytest.raises(
            ValueError, match=rf"{name} needs an? .*nfe >= {valid[0]}.*\(got {nfe}\)"
        ):
            sample(CountingDenoiser(), latents, name, nfe, afs=afs, denoise_to_zero=dtz, **opts)


def test_denoise_to_zero_returns_the_denoised_last_state():
    den = CountingDenoiser()
    latents = torch.randn(2, 3, dtype=torch.float64)
    x, traj = sample(den, latents, "dpmpp", 5, denoise_to_zero=True, return_trajectory=True)
    assert traj.shape[0] == 5  # 4 steps
    assert torch.equal(x, den(traj[-1], torch.tensor(0.002, dtype=torch.float64)))


def test_heun_message_and_steps():
    with pytest.raises(ValueError, match=r"^heun needs an even nfe >= 2 \(got 5\)$"):
        REGISTRY["heun"].steps_for_nfe(5)
    with pytest.raises(ValueError, match=r"^heun needs an odd nfe >= 1 with afs=True \(got 4\)$"):
        REGISTRY["heun"].steps_for_nfe(4, afs=True)
    assert REGISTRY["heun"].steps_for_nfe(5, afs=True) == 3
    assert REGISTRY["dpm2"].steps_for_nfe(7, afs=True) == 4
    assert REGISTRY["deis"].steps_for_nfe(6, denoise_to_zero=True) == 5
    assert REGISTRY["heun"].steps_for_nfe(6, afs=True, denoise_to_zero=True) == 3
    assert REGISTRY["ddim"].steps_for_nfe(10) == 10
    assert REGISTRY["unipc"].steps_for_nfe(2, order=3) == 2  # N < max_order: still N calls
    assert REGISTRY["ipndm"].steps_for_nfe(9, afs=True) == 10
    with pytest.raises(ValueError, match=r"^ddim needs an nfe >= 1 with afs=True \(got 0\)$"):
        REGISTRY["ddim"].steps_for_nfe(0, afs=True)
    with pytest.raises(ValueError, match=r"needs an nfe >= 1 \(got 2.5\)"):
        REGISTRY["ddim"].steps_for_nfe(2.5)


def test_dpm2_calls_the_model_at_each_step_and_its_geometric_midpoint():
    den = CountingDenoiser()
    t = [10.0, 5.0, 2.0, 1.0]
    sample(den, torch.randn(2, 2, dtype=torch.float64), "dpm2", 6, t)
    mids = [math.sqrt(a * b) for a, b in itertools.pairwise(t)]
    assert den.sigmas == pytest.approx([s for pair in zip(t, mids) for s in pair], rel=1e-15)
    den = CountingDenoiser()
    sample(den, torch.randn(2, 2, dtype=torch.float64), "dpm2", 5, t, afs=True)
    assert den.sigmas == pytest.approx([mids[0], 5.0, mids[1], 2.0, mids[2]], rel=1e-15)


def test_unipc_calls_the_model_at_predicted_states():
    """Warm-up and main steps call at t_0, then t_1..t_{N-1} (never after the last step)."""
    den = CountingDenoiser()
    t = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    sample(den, torch.randn(2, 2, dtype=torch.float64), "unipc", 5, t)
    assert den.sigmas == t[:-1].tolist()
