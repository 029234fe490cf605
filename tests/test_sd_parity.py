"""Stable Diffusion's denoiser against diffusers itself on a tiny random-weight pipeline.

The project's ddim (Euler in sigma) over the denoiser equals diffusers' StableDiffusionPipeline
with its DDIMScheduler (eta 0, SD's "leading" timesteps) from the same latents, with and without
classifier-free guidance. The two live in different coordinates: diffusers' latents are VP states
x_vp, the solver's are x = x_vp / sqrt(abar) at sigma = sqrt((1 - abar) / abar). So the solver
runs on the explicit sigmas of diffusers' timesteps (ending at its final abar, alphas_cumprod[0]),
starts from latents * sqrt(1 + sigma_0^2) / sigma_0 (x_0 = x_vp(T) / sqrt(abar_T)), and its end
state is compared after multiplying by sqrt(abar_0) = 1 / sqrt(1 + sigma_min^2).
"""
from __future__ import annotations

import pytest

pytest.importorskip("diffusers")

import torch
from diffusers import StableDiffusionPipeline
from sd_tiny import write_captions, write_pipeline

import solvers
from bench.models.prompts import read_captions
from bench.models.sd import SDDenoiser, load_sd

STEPS = 6
SEEDS = range(3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    write_captions(root / "captions.csv", 8)
    return write_pipeline(root / "pipe")


def _pipeline(folder, dtype):
    parts = load_sd(folder, dtype=dtype, cache_dir=folder.parent / "cache")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                   feature_extractor=None,
                                                   requires_safety_checker=False,
                                                   dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return parts, pipe


def _relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("guidance", [1.0, 7.5])
# float64 stops near 1e-8: diffusers' DDIM step keeps sqrt(abar) and sqrt(1 - abar) in float32.
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-7)])
def test_ddim_equals_diffusers_ddim_loop(folder, guidance, dtype, tol):
    parts, pipe = _pipeline(folder, dtype)
    prompts = read_captions(folder.parent / "captions.csv")
    den = SDDenoiser(parts, prompts, guidance=guidance, dtype=dtype)
    latents, _ = solvers.latents_for_seeds(SEEDS, den.shape, dtype=dtype)

    pipe.scheduler.set_timesteps(STEPS)
    abar = den.alphas_cumprod
    sigma = ((1 - abar) / abar).sqrt()
    times = torch.cat([sigma[pipe.scheduler.timesteps.long()], sigma[:1]])
    assert times[-1] == den.sigma_min
    start = latents * float((1 + times[0] ** 2).sqrt() / times[0])
    ours = solvers.sample(den, start, "ddim", STEPS, times,
                          class_labels=den.labels_for_seeds(SEEDS, dtype=dtype))
    ours = ours / float((1 + times[-1] ** 2).sqrt())

    theirs = pipe(prompt=[prompts.prompts[n] for n in SEEDS], num_inference_steps=STEPS,
                  guidance_scale=guidance, eta=0.0, latents=latents.clone(),
                  output_type="latent").images
    assert theirs.dtype == dtype
    assert _relative(ours, theirs) < tol


class CountingUNet(torch.nn.Module):
    """Counts forward calls and the batch each saw."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.config = unet.config
        self.batches: list[int] = []

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, x, t, encoder_hidden_states):
        self.batches.append(x.shape[0])
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states)


def test_guidance_is_one_batched_call_per_step_and_equals_two_calls(folder):
    parts = load_sd(folder, dtype=torch.float64, cache_dir=folder.parent / "cache")
    counter = CountingUNet(parts.unet)
    parts = type(parts)(**{**parts.__dict__, "unet": counter})
    prompts = read_captions(folder.parent / "captions.csv")
    guided = SDDenoiser(parts, prompts, guidance=7.5, dtype=torch.float64)
    plain = SDDenoiser(parts, prompts, guidance=1.0, dtype=torch.float64)
    unconditional = SDDenoiser(parts, prompts, guidance=0.0, dtype=torch.float64)
    latents, _ = solvers.latents_for_seeds(SEEDS, guided.shape, dtype=torch.float64)
    labels = guided.labels_for_seeds(SEEDS, dtype=torch.float64)

    solvers.sample(guided, latents, "ddim", 5, class_labels=labels)
    assert counter.batches == [2 * len(SEEDS)] * 5
    assert guided.unet_evals_per_call == 2 and plain.unet_evals_per_call == 1

    counter.batches.clear()
    x, sigma = latents * 3.0, torch.tensor(3.0, dtype=torch.float64)
    d_guided = guided(x, sigma, labels)
    d_cond = plain(x, sigma, labels)
    assert counter.batches == [2 * len(SEEDS), len(SEEDS)]
    d_uncond = unconditional(x, sigma, labels)
    two_calls = d_uncond + 7.5 * (d_cond - d_uncond)
    assert torch.allclose(d_guided, two_calls, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(d_cond, d_uncond, rtol=1e-3)  # the prompt does change the output


def test_half_precision_runs_the_networks_only(folder):
    """bf16 (fp16 needs a GPU) weights, float32 solver states, close to the float32 result."""
    prompts = read_captions(folder.parent / "captions.csv")
    results = {}
    for precision in ("fp32", "bf16"):
        parts = load_sd(folder, precision=precision, cache_dir=folder.parent / "cache")
        den = SDDenoiser(parts, prompts, guidance=7.5)
        latents, _ = solvers.latents_for_seeds(SEEDS, den.shape)
        results[precision] = solvers.sample(den, latents, "ddim", 5,
                                            class_labels=den.labels_for_seeds(SEEDS))
        assert parts.unet.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        assert den.decode(results[precision]).dtype == torch.float32
    assert results["bf16"].dtype == torch.float32
    assert 0 < _relative(results["bf16"], results["fp32"]) < 0.05
