"""The correction hook: identity == plain, what the hook sees, history stays raw; batch
independence; dtype, device and labels follow the inputs."""

import pytest
import torch
from solver_helpers import GaussianDenoiser, latents

from solvers import REGISTRY, get_schedule, sample, schedule_for, solver_names
from solvers.deis import deis_weights
from solvers.dpmpp import dpmpp_weights, multistep_order
from solvers.ipndm import AB_WEIGHTS, ipndm_v_weights

SETTINGS = [
    ("ddim", {}),
    ("euler", {"afs": True}),
    ("heun", {}),
    ("heun", {"afs": True, "denoise_to_zero": True}),
    ("ipndm", {}),
    ("ipndm", {"order": 2, "afs": True}),
    ("dpm2", {}),
    ("dpm2", {"afs": True, "denoise_to_zero": True}),
    ("ipndm_v", {}),
    ("ipndm_v", {"order": 3, "variant": "exact", "afs": True}),
    ("deis", {}),
    ("deis", {"order": 3, "variant": "rhoab", "denoise_to_zero": True}),
    ("deis", {"rho": 7.0, "afs": True}),
    ("dpmpp", {}),
    ("dpmpp", {"thresholding": True, "afs": True}),
    ("dpmpp", {"order": 2, "lower_order_final": False, "thresholding": True}),
    ("unipc", {}),
    ("unipc", {"variant": "bh1", "thresholding": True, "afs": True}),
    ("unipc", {"order": 2, "lower_order_final": False, "denoise_to_zero": True}),
]
NFE = 8


def run(name, opts, z, correction=None, den=None, **kw):
    den = den or GaussianDenoiser(s=0.5)
    return sample(den, z, name, NFE, correction=correction, return_trajectory=True, **opts, **kw)


def scaled(ctx):
    return ctx.direction * 0.9


@pytest.mark.parametrize("name,opts", SETTINGS, ids=str)
def test_identity_correction_is_the_plain_solver(name, opts):
    z = latents(6, (3, 2, 2))
    x_plain, traj_plain = run(name, opts, z)
    x_hooked, traj_hooked = run(name, opts, z, correction=lambda ctx: ctx.direction)
    assert torch.equal(x_plain, x_hooked)
    assert torch.equal(traj_plain, traj_hooked)


@pytest.mark.invariance
@pytest.mark.parametrize("name,opts", SETTINGS, ids=str)
def test_batch_independence(name, opts):
    """The first 10 of 64 samples equal the samples of those 10 latents alone. Bit-identical by
    construction: the Gaussian denoiser, the solver steps and the hook are elementwise, and
    thresholding takes each sample's own top-k; nothing reduces over the batch."""
    z = latents(64, (3, 2, 2))
    x_all, _ = run(name, opts, z, correction=scaled)
    x_ten, _ = run(name, opts, z[:10].clone(), correction=scaled)
    assert torch.equal(x_all[:10], x_ten)


@pytest.mark.parametrize("name,opts", SETTINGS, ids=str)
def test_what_the_hook_sees_and_does(name, opts):
    z = latents(4, (3,))
    seen, returned = [], []

    def hook(ctx):
        seen.append(ctx)
        returned.append(ctx.direction * (0.8 + 0.05 * ctx.index))
        return returned[-1]

    den = GaussianDenoiser(s=0.5)
    x, traj = run(name, opts, z, correction=hook, den=den)
    spec = REGISTRY[name]
    steps = spec.steps_for_nfe(NFE, **opts)
    assert den.calls == NFE  # a changed direction changes the result, not the cost
    x_plain, _ = run(name, opts, z)
    assert not torch.allclose(x, x_plain)

    times = schedule_for(den, name, NFE, **opts)
    assert [ctx.index for ctx in seen] == list(range(steps))
    for i, ctx in enumerate(seen):
        assert ctx.num_steps == steps
        assert ctx.t_cur.dim() == 0 and ctx.t_cur.item() == times[i].item()
        assert ctx.t_next.item() == times[i + 1].item()
        assert torch.equal(ctx.x_cur, traj[i])
        assert torch.equal(ctx.x_T, traj[0]) and torch.equal(ctx.x_T, 80.0 * z)
        assert len(ctx.used) == i and all(u is r for u, r in zip(ctx.used, returned))
        step = traj[i] + (times[i + 1] - times[i]) * returned[i]
        torch.testing.assert_close(traj[i + 1], step, rtol=1e-14, atol=1e-14)


def raw_d(den, x, t):
    return (x - den(x, torch.tensor(t, dtype=x.dtype))) / t


# Every step's weights of the raw d's, newest first, at the default order 4.
MULTISTEP_WEIGHTS = {
    "ipndm": lambda times: [AB_WEIGHTS[min(4, i + 1)] for i in range(len(times) - 1)],
    "ipndm_v": lambda times: ipndm_v_weights(tuple(times), 4, "toolbox"),
    "deis": lambda times: deis_weights(tuple(times), 4, "tab"),
}


@pytest.mark.parametrize("name", list(MULTISTEP_WEIGHTS))
def test_multistep_history_is_raw_d_at_reached_states(name):
    z, den = latents(4, (3,)), GaussianDenoiser(s=0.5)
    seen = []
    _, traj = sample(
        den,
        z,
        name,
        NFE,
        correction=lambda c: seen.append(c) or 0.7 * c.direction,
        return_trajectory=True,
    )
    times = schedule_for(den, name, NFE).tolist()
    ds = [raw_d(den, traj[i], times[i]) for i in range(NFE)]
    for i, (ctx, weights) in enumerate(zip(seen, MULTISTEP_WEIGHTS[name](times))):
        assert len(weights) == min(4, i + 1)
        want = sum(w * ds[i - j] for j, w in enumerate(weights))
        torch.testing.assert_close(ctx.direction, want, rtol=1e-13, atol=1e-13)


def test_dpm2_direction_is_d_at_the_geometric_midpoint():
    z, den = latents(4, (3,)), GaussianDenoiser(s=0.5)
    seen = []
    _, traj = run("dpm2", {}, z, correction=lambda c: seen.append(c) or 0.7 * c.direction)
    times = schedule_for(den, "dpm2", NFE).tolist()
    for i, ctx in enumerate(seen):
        t_mid = (times[i] * times[i + 1]) ** 0.5
        x_mid = traj[i] + (t_mid - times[i]) * raw_d(den, traj[i], times[i])
        torch.testing.assert_close(ctx.direction, raw_d(den, x_mid, t_mid), rtol=1e-13, atol=1e-13)


def test_dpmpp_history_is_raw_denoised_at_reached_states():
    z, den = latents(4, (3,)), GaussianDenoiser(s=0.5)
    seen = []
    _, traj = sample(
        den,
        z,
        "dpmpp",
        NFE,
        correction=lambda c: seen.append(c) or 0.7 * c.direction,
        return_trajectory=True,
    )
    times = get_schedule("logsnr", NFE + 1, 0.002, 80.0).tolist()
    ms = [den(traj[i], torch.tensor(times[i], dtype=torch.float64)) for i in range(NFE)]
    for i, ctx in enumerate(seen):
        p = multistep_order(i, NFE, 3, True)
        a, c = dpmpp_weights(times[i + 1 - p : i + 2])
        want = a * traj[i] + sum(w * ms[i - k] for k, w in enumerate(c))
        torch.testing.assert_close(ctx.direction, want, rtol=1e-12, atol=1e-12)


def test_unipc_hook_sees_the_corrected_direction():
    """With an identity hook, x_{i+1} = x_i + delta_i d~_i reproduces the plain UniPC states,
    so the direction the hook saw is the post-corrector one (not the predictor's)."""
    z = latents(4, (3,))
    seen = []
    _, traj = run("unipc", {}, z, correction=lambda c: seen.append(c) or c.direction)
    times = get_schedule("logsnr", NFE + 1, 0.002, 80.0)
    for i, ctx in enumerate(seen):
        step = traj[i] + (times[i + 1] - times[i]) * ctx.direction
        torch.testing.assert_close(step, traj[i + 1], rtol=1e-14, atol=1e-14)
    # The predictor alone would land elsewhere: UniPC differs from DPM++ at order 2.
    x_dpm, _ = run("dpmpp", {"order": 2}, z)
    x_uni, _ = run("unipc", {"order": 2}, z)
    assert (x_dpm - x_uni).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", solver_names())
def test_dtype_follows_latents(name, dtype):
    sigmas = []

    def den(x, sigma, class_labels=None):
        sigmas.append(sigma)
        return x / (1 + sigma**2)

    opts = {"thresholding": True} if "thresholding" in REGISTRY[name].options else {}
    x, traj = sample(den, latents(3, (4,), dtype=dtype), name, 6, return_trajectory=True, **opts)
    assert x.dtype == traj.dtype == dtype
    assert all(s.dtype == dtype and s.dim() == 0 for s in sigmas)
    assert bool(torch.isfinite(x).all())


def test_class_labels_reach_the_denoiser():
    labels = torch.eye(3, dtype=torch.float64)
    got = []

    def den(x, sigma, class_labels=None):
        got.append(class_labels)
        return x * 0

    sample(den, latents(3, (2,)), "unipc", 4, class_labels=labels)
    assert len(got) == 4 and all(g is labels for g in got)


def test_discrete_schedule_uses_the_denoisers_alphas_cumprod():
    den = GaussianDenoiser()
    den.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    den.sigma_min, den.sigma_max = 0.05, 20.0
    z = latents(2, (4,))
    _, traj = sample(den, z, "ddim", 5, "discrete", rho=1, return_trajectory=True)
    t = get_schedule("discrete", 6, 0.05, 20.0, rho=1, alphas_cumprod=den.alphas_cumprod)
    assert torch.equal(traj[0], z * t[0])
    x, _ = sample(den, z, "ddim", 5, t, return_trajectory=True)
    assert torch.equal(x, traj[-1])
