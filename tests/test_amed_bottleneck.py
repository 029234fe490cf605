"""AMED's bottleneck features from forward hooks on the EDM and consistency-models UNets."""

import pytest
import torch
from edm_format import tiny_network

import amed
from bench.models.bottleneck import BottleneckFeatures, bottleneck_module
from bench.models.checkpoints import EDMDenoiser
from bench.models.cm_network import (
    LOG_EPS,
    SIGMA_DATA,
    TIME_SCALE,
    KarrasPrecond,
    UNetModel,
    timestep_embedding,
)

# A 32 px ADM UNet with one downsampling: its middle block works on a 16x16 map.
TINY_CM = {"image_size": 32, "model_channels": 32, "num_res_blocks": 1, "attention_ds": (2,),
           "channel_mult": (1, 2), "num_heads": 2, "resblock_updown": True}


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def edm():
    net, _ = tiny_network(img_resolution=8, img_channels=3, seed=3)
    return EDMDenoiser(net, "tiny-edm")


@pytest.fixture(scope="module")
def cm():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        unet = UNetModel(**TINY_CM).eval().requires_grad_(False)
    return EDMDenoiser(KarrasPrecond(unet), "tiny-cm")


def test_edm_hook_reads_the_last_encoder_block_and_leaves_the_output_alone(edm):
    x, sigma = _x((4, 3, 8, 8)), torch.tensor(2.5)
    plain = edm(x, sigma)
    with BottleneckFeatures(edm) as features:
        hooked = edm(x, sigma)
        got = features(x, sigma)
    assert torch.equal(hooked, plain)
    assert got.shape == (4, 64)
    # The tiny network's encoder is one convolution of the preconditioned input, already 8x8.
    inner = edm.net.model.enc["8x8_conv"](x / (0.5**2 + sigma**2).sqrt())
    torch.testing.assert_close(got, inner.mean(dim=1).flatten(1))
    # Removed on exit: the network calls no hook and the features take no more captures.
    assert not bottleneck_module(edm.net)._forward_hooks
    assert torch.equal(edm(x, sigma), plain) and not features.captured


def test_cm_hook_pools_the_middle_block_to_8x8(cm):
    x, sigma = _x((4, 3, 32, 32), seed=1), torch.tensor(0.7)
    plain = cm(x, sigma)
    unet = cm.net.model
    with BottleneckFeatures(cm) as features:
        assert torch.equal(cm(x, sigma), plain)
        got = features(x, sigma)
        # A denoiser that splits the batch still yields the whole batch, in order.
        cm(x[:1], sigma)
        cm(x[1:], sigma)
        chunked = features(x, sigma)
    c_in = 1 / (sigma**2 + SIGMA_DATA**2).sqrt()
    emb = unet.time_embed(timestep_embedding((TIME_SCALE * torch.log(sigma + LOG_EPS))[None], 32))
    h = c_in * x
    for block in unet.input_blocks:
        h = block(h, emb)
    middle = unet.middle_block(h, emb)
    assert middle.shape[-2:] == (16, 16)
    expected = torch.nn.functional.avg_pool2d(middle, 2).mean(dim=1).flatten(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked, got, rtol=1e-5, atol=1e-6)
    assert got.std() > 0


def test_reading_before_a_call_and_unknown_networks_are_errors(cm):
    with BottleneckFeatures(cm) as features, pytest.raises(RuntimeError, match="call the denoiser"):
        features(_x((2, 3, 32, 32)), torch.tensor(1.0))
    with pytest.raises(ValueError, match="no EDM encoder"):
        bottleneck_module(torch.nn.Linear(2, 2))


def test_amed_trains_and_samples_on_hooked_features_with_exact_nfe(cm):
    with BottleneckFeatures(cm) as features:
        art = amed.fit(cm, "ipndm", 5, afs=True, features=features, trajectories=4, epochs=1,
                       batch_size=2, teacher_nfe=8, progress=False)
        assert (art.features, art.feature_dim) == ("bottleneck", 64)
        calls = []
        counter = cm.net.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            out = amed.sample(cm, _x((2, 3, 32, 32), seed=2), art, features=features)
        finally:
            counter.remove()
    assert len(calls) == 5 and torch.isfinite(out).all()
