"""Bad input gives one clear ValueError that names what is valid."""

from functools import partial

import pytest
import torch
from solver_helpers import GaussianDenoiser, latents

from solvers import REGISTRY, SolverSpec, sample, schedule_for, solver_names

DEN = GaussianDenoiser()


def test_registry():
    assert solver_names() == ["ddim", "heun", "dpm2", "ipndm", "ipndm_v", "deis", "dpmpp", "unipc"]
    assert REGISTRY["euler"] is REGISTRY["ddim"]
    assert all(isinstance(spec, SolverSpec) and spec.description for spec in REGISTRY.values())
    assert {n: REGISTRY[n].default_schedule for n in solver_names()} == {
        "ddim": "polynomial",
        "heun": "polynomial",
        "dpm2": "polynomial",
        "ipndm": "polynomial",
        "ipndm_v": "polynomial",
        "deis": "time_uniform",
        "dpmpp": "logsnr",
        "unipc": "logsnr",
    }
    assert REGISTRY["ipndm"].defaults["order"] == 4
    common = {"afs": False, "denoise_to_zero": False, "order": 4}
    # deis: the toolbox's results setting, time_uniform with rho = 2 (docs/solvers-extra.md).
    assert REGISTRY["deis"].defaults == common | {"rho": 2.0, "variant": "tab"}
    assert REGISTRY["ipndm_v"].defaults == common | {"rho": 7.0, "variant": "toolbox"}
    assert REGISTRY["dpm2"].options == REGISTRY["ddim"].options and REGISTRY["dpm2"].stages == 2
    assert REGISTRY["unipc"].defaults == {
        "rho": 7.0,
        "afs": False,
        "denoise_to_zero": False,
        "order": 3,
        "variant": "bh2",
        "lower_order_final": True,
        "thresholding": False,
    }
    assert REGISTRY["ddim"].options == {"rho", "afs", "denoise_to_zero"}


@pytest.mark.parametrize(
    "call,message",
    [
        (
            {"solver": "rk4"},
            (
                r"^unknown solver 'rk4'; "
                r"valid: ddim, heun, dpm2, ipndm, ipndm_v, deis, dpmpp, unipc, euler$"
            ),
        ),
        (
            {"schedule": "karras"},
            r"^unknown schedule 'karras'; valid: polynomial, logsnr, time_uniform",
        ),
        ({"order": 2}, r"^ddim does not take option 'order'; valid: afs, denoise_to_zero, rho$"),
        (
            {"solver": "dpmpp", "eta": 1.0},
            r"^dpmpp does not take option 'eta'; valid: afs, .*thresholding",
        ),
        ({"solver": "ipndm", "order": 5}, r"^ipndm order must be an integer in 1\.\.4 \(got 5\)$"),
        ({"solver": "unipc", "order": 0}, r"^unipc order must be an integer in 1\.\.3 \(got 0\)$"),
        (
            {"solver": "unipc", "variant": "bh3"},
            r"^unipc variant must be one of bh1, bh2 \(got 'bh3'\)$",
        ),
        (
            {"solver": "deis", "variant": "bh2"},
            r"^deis variant must be one of tab, rhoab \(got 'bh2'\)$",
        ),
        (
            {"solver": "ipndm_v", "variant": "tab"},
            r"^ipndm_v variant must be one of toolbox, exact \(got 'tab'\)$",
        ),
        ({"solver": "deis", "order": 5}, r"^deis order must be an integer in 1\.\.4 \(got 5\)$"),
        ({"nfe": 3, "solver": "dpm2"}, r"^dpm2 needs an even nfe >= 2 \(got 3\)$"),
        ({"solver": "dpm2", "order": 2}, r"^dpm2 does not take option 'order'"),
        ({"afs": "yes"}, r"^option afs must be True or False \(got 'yes'\)$"),
        ({"rho": 0}, r"^option rho must be a positive number \(got 0\)$"),
        ({"nfe": 5, "solver": "heun"}, r"^heun needs an even nfe >= 2 \(got 5\)$"),
        ({"schedule": "discrete"}, r"^the discrete schedule needs the model's alphas_cumprod$"),
        ({"schedule": torch.tensor([80.0, 1.0, 0.002])}, r"needs 5 times \(N\+1 for N=4 steps\)"),
        ({"schedule": [80.0, 1.0, 2.0, 0.5, 0.002]}, r"must be positive and strictly decreasing"),
        (
            {"latents": torch.zeros(2, 3, dtype=torch.int64)},
            r"^latents must be a floating-point tensor, got torch\.int64$",
        ),
        ({"latents": torch.zeros(3)}, r"^latents must be \[B, \*shape\] with a batch dimension"),
        (
            {"correction": lambda ctx: ctx.direction[0]},
            r"^a correction must return a tensor of shape \(2, 4\) and dtype torch\.float64",
        ),
    ],
)
def test_bad_input(call, message):
    args = {"denoiser": DEN, "latents": latents(2, (4,)), "solver": "ddim", "nfe": 4} | call
    with pytest.raises(ValueError, match=message):
        sample(**args)


def test_explicit_schedule_is_used_verbatim():
    t = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    z = latents(2, (4,))
    x, traj = sample(DEN, z, "ddim", 4, t, return_trajectory=True)
    assert torch.equal(traj[0], 10.0 * z)
    x_list = sample(DEN, z, "ddim", 4, t.tolist())
    assert torch.equal(x, x_list)


def record(seen, ctx):
    seen.append(ctx)
    return ctx.direction


def test_schedule_for_is_what_sample_steps_through():
    den = GaussianDenoiser(sigma_min=0.01, sigma_max=50.0)
    z = latents(2, (4,))
    for name, opts in [("heun", {"afs": True}), ("unipc", {}), ("ipndm", {"rho": 3})]:
        times = schedule_for(den, name, 7, **opts)
        seen = []
        sample(den, z, name, 7, correction=partial(record, seen), **opts)
        assert times.dtype == torch.float64
        assert [c.t_cur.item() for c in seen] + [seen[-1].t_next.item()] == times.tolist()
    with pytest.raises(ValueError, match="heun needs an even nfe"):
        schedule_for(den, "heun", 7)
