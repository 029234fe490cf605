"""pytest-benchmark: the consistency-models UNet (bench.models.cm_network) as a pasbench Denoiser.

CPU: the tiny configuration of tests/test_cm_checkpoint.py (32 px, 32 channels), a batch of 16,
one network call and a whole ipndm solve at NFE 10; seconds per image = mean / 16 (per call) or
mean / 16 / 10 (per evaluation inside a solve). The solve minus 10 calls is the time outside the
network. CUDA only: the released LSUN Bedroom 256 configuration with random weights, fp32 and
fp16 (images per second = 16 / mean). Workflow: README.md here.
"""

from __future__ import annotations

import pytest
import torch

import solvers
from bench.models.checkpoints import EDMDenoiser
from bench.models.cm_network import KarrasPrecond, UNetModel

BATCH, NFE = 16, 10
TINY = {"image_size": 32, "model_channels": 32, "num_res_blocks": 1, "attention_ds": (2,),
        "channel_mult": (1, 2), "num_heads": 2, "resblock_updown": True}
BEDROOM = {"image_size": 256, "model_channels": 256, "num_res_blocks": 2,
           "attention_ds": (8, 16, 32), "channel_mult": (1, 1, 2, 2, 4, 4),
           "num_head_channels": 64, "resblock_updown": True}
on_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _denoiser(config: dict, device: str, precision: str = "fp32") -> EDMDenoiser:
    torch.manual_seed(0)
    with torch.device(device):
        net = KarrasPrecond(UNetModel(**config)).eval().requires_grad_(False)
    return EDMDenoiser(net, "random", precision=precision)


def _calls(den: EDMDenoiser) -> list[int]:
    calls = []
    den.net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


def _latents(den: EDMDenoiser) -> torch.Tensor:
    latents, _ = solvers.latents_for_seeds(range(BATCH), den.shape, device=den.device)
    return latents


def _sync(den: EDMDenoiser) -> None:
    if den.device.type == "cuda":
        torch.cuda.synchronize(den.device)


@pytest.mark.parametrize("device,config,precision", [
    pytest.param("cpu", TINY, "fp32", id="cpu-tiny"),
    pytest.param("cuda", BEDROOM, "fp32", id="cuda-bedroom-fp32", marks=on_cuda),
    pytest.param("cuda", BEDROOM, "fp16", id="cuda-bedroom-fp16", marks=on_cuda),
])
def test_network_call(benchmark, device, config, precision):
    den = _denoiser(config, device, precision)
    x, calls = _latents(den) * 80.0, _calls(den)

    def call():
        out = den(x, 80.0)
        _sync(den)
        return out

    with torch.inference_mode():
        out = benchmark(call)
    assert out.shape == (BATCH, 3, config["image_size"], config["image_size"])
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and calls[0] == BATCH


@pytest.mark.parametrize("device,config,precision", [
    pytest.param("cpu", TINY, "fp32", id="cpu-tiny"),
    pytest.param("cuda", BEDROOM, "fp16", id="cuda-bedroom-fp16", marks=on_cuda),
])
def test_ipndm_solve(benchmark, device, config, precision):
    den = _denoiser(config, device, precision)
    latents, calls = _latents(den), _calls(den)

    def solve():
        out = solvers.sample(den, latents, "ipndm", NFE)
        _sync(den)
        return out

    with torch.inference_mode():
        out = benchmark(solve)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert len(calls) % NFE == 0 and calls[:NFE] == [BATCH] * NFE
