"""Consistency-models EDM checkpoints (LSUN Bedroom 256): network layout, loader, dataset, grid."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from run_helpers import local_fid_options, read_rows, write_grid

import solvers
from bench.errors import UserError
from bench.grids import load_grid
from bench.metrics.inception import FEATURE_DIM
from bench.metrics.reference import reference_stats
from bench.models import registry as datasets
from bench.models.checkpoints import load_cm
from bench.models.cm import CM_BEDROOM_URL, OPENAI_BEDROOM_REF_URL
from bench.models.cm_network import AttentionBlock, KarrasPrecond, UNetModel
from bench.models.edm import checkpoint_spec
from bench.plan import Overrides, build_plan
from bench.run import main

# A tiny create_model configuration: 32 px, 32 channels, attention at 16 px only (and in the
# middle block), 2 heads.
TINY_FLAGS = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": (1, 2),
    "attention_resolutions": (16,),
    "num_heads": 2,
    "num_head_channels": -1,
    "resblock_updown": True,
    "use_scale_shift_norm": False,
}
TINY_UNET = {
    "image_size": 32,
    "model_channels": 32,
    "num_res_blocks": 1,
    "attention_ds": (2,),
    "channel_mult": (1, 2),
    "num_heads": 2,
    "num_head_channels": -1,
    "resblock_updown": True,
    "use_scale_shift_norm": False,
}


def tiny_unet(seed: int = 0, **changes) -> UNetModel:
    """The tiny UNet with seeded random weights (PyTorch's default initialisation, no zeros)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNetModel(**{**TINY_UNET, **changes}).eval().requires_grad_(False)


@pytest.fixture
def tiny_file(tmp_path):
    unet = tiny_unet(seed=1)
    path = tmp_path / "tiny_cm.pt"
    torch.save(unet.state_dict(), path)
    return unet, path


def test_tiny_state_dict_loads_with_the_create_model_keywords(tiny_file):
    unet, path = tiny_file
    den = load_cm(path, **TINY_FLAGS)
    assert (den.name, den.shape, den.label_dim) == ("tiny_cm", (3, 32, 32), 0)
    assert (den.sigma_min, den.sigma_max, den.dtype) == (0.002, 80.0, torch.float32)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = KarrasPrecond(unet)(x, torch.tensor(1.7))
    assert torch.equal(den(x, 1.7), expected)
    assert expected.abs().max() > 0.1  # random weights: every block contributes
    # consistency_models' own string spelling of the two tuple flags loads the same network.
    strings = {**TINY_FLAGS, "channel_mult": "1,2", "attention_resolutions": "16"}
    assert torch.equal(load_cm(path, **strings)(x, 1.7), expected)


def test_class_conditional_checkpoint_embeds_the_one_hot_class(tmp_path):
    unet = tiny_unet(seed=2, num_classes=1000)
    torch.save(unet.state_dict(), tmp_path / "cond.pt")
    den = load_cm(tmp_path / "cond.pt", **TINY_FLAGS, class_cond=True, dtype=torch.float64)
    assert den.label_dim == 1000
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.eye(1000, dtype=torch.float64)[[3, 7]]
    out = den(x, 0.5, labels)
    assert out.dtype == torch.float64
    direct = KarrasPrecond(unet)(x.float(), torch.tensor(0.5), labels.float())
    torch.testing.assert_close(out, direct.double(), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out, den(x, 0.5, labels.flip(0)))


def test_fp16_runs_the_network_in_half_precision_with_float32_states(tiny_file):
    _, path = tiny_file
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    full = load_cm(path, **TINY_FLAGS)(x, 3.0)
    half = load_cm(path, **TINY_FLAGS, precision="fp16")(x, 3.0)
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)
    torch.testing.assert_close(half, full, rtol=0.02, atol=0.02)


def test_bedroom_defaults_build_the_released_layout(tmp_path):
    # 566 tensors and these shapes: what a public test that read edm_bedroom256_ema.pt asserts.
    with torch.device("meta"):
        unet = UNetModel(
            256, 256, 2, (8, 16, 32), (1, 1, 2, 2, 4, 4), num_head_channels=64,
            resblock_updown=True,
        )
    # Stride-0 views of one number: a state dict of the full shapes in a file of a few kB.
    state = {key: torch.zeros(()).expand(value.shape) for key, value in unet.state_dict().items()}
    torch.save(state, tmp_path / "edm_bedroom256_ema.pt")
    den = load_cm(tmp_path / "edm_bedroom256_ema.pt")  # every keyword at its default
    loaded = den.net.model.state_dict()
    assert len(loaded) == 566 and den.shape == (3, 256, 256) and den.label_dim == 0
    shapes = {
        "input_blocks.0.0.weight": (256, 3, 3, 3),
        "input_blocks.1.0.in_layers.2.weight": (256, 256, 3, 3),
        "middle_block.1.qkv.weight": (3072, 1024, 1, 1),
        "output_blocks.17.0.out_layers.3.weight": (256, 256, 3, 3),
        "out.2.weight": (3, 256, 3, 3),
    }
    assert {key: tuple(loaded[key].shape) for key in shapes} == shapes
    assert den.net.model.middle_block[1].num_heads == 16  # 1024 channels / 64 per head
    with pytest.raises(UserError, match="mis-shaped keys: .*emb_layers"):
        load_cm(tmp_path / "edm_bedroom256_ema.pt", use_scale_shift_norm=True)


def _heads_by_layout(qkv: torch.Tensor, heads: int, layout: str) -> torch.Tensor:
    """Attention written out head by head, qkv channels read as (three, heads, d) or as
    (heads, three, d)."""
    width = qkv.shape[1] // 3
    d = width // heads
    outs = []
    for h in range(heads):
        if layout == "three_heads_d":
            q, k, v = (qkv[:, j * width + h * d : j * width + (h + 1) * d] for j in range(3))
        else:
            q, k, v = (qkv[:, h * 3 * d + j * d : h * 3 * d + (j + 1) * d] for j in range(3))
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
        outs.append(torch.einsum("bts,bcs->bct", weights, v))
    return torch.cat(outs, dim=1)


def test_attention_reads_qkv_as_three_heads_head_dim():
    channels, heads = 64, 2
    block = AttentionBlock(channels, num_heads=heads).double().eval()
    gen = torch.Generator().manual_seed(3)
    # Hand-built qkv weight: the 3 x 2 blocks of 32 output channels (q/k/v of head 0/1 in the
    # flash order) get scales 0.2 ... 1.2, so each head's q, k and v are tell-apart.
    scales = torch.arange(1, 7, dtype=torch.float64).repeat_interleave(32) * 0.2
    weight = torch.randn(3 * channels, channels, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        block.qkv.weight.copy_((weight * scales[:, None])[:, :, None, None])
        block.qkv.bias.zero_()
        block.proj_out.weight.copy_(torch.eye(channels, dtype=torch.float64)[:, :, None, None])
        block.proj_out.bias.zero_()
    x = torch.randn(2, channels, 4, 4, generator=gen, dtype=torch.float64)
    qkv = block.qkv(block.norm(x)).reshape(2, 3 * channels, 16)
    got = (block(x) - x).reshape(2, channels, 16)
    flash = _heads_by_layout(qkv, heads, "three_heads_d")
    legacy = _heads_by_layout(qkv, heads, "heads_three_d")
    torch.testing.assert_close(got, flash, rtol=1e-12, atol=1e-12)
    assert (got - legacy).abs().max() > 0.1


@pytest.mark.parametrize("sigma", [0.002, 0.5, 80.0])
def test_preconditioning_is_karras_denoisers(sigma):
    class Probe(torch.nn.Module):
        """Records what the UNet is given; returns ones, so D = c_skip x + c_out."""

        image_size, in_channels, num_classes = 4, 3, None

        def forward(self, x, t, y=None):
            self.seen = (x, t)
            return torch.ones_like(x)

    probe = Probe()
    x = torch.full((1, 3, 4, 4), 2.0, dtype=torch.float64)
    out = KarrasPrecond(probe)(x, torch.tensor(sigma, dtype=torch.float64))
    sd = 0.5
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / math.sqrt(sigma**2 + sd**2)
    c_in = 1 / math.sqrt(sigma**2 + sd**2)
    seen_x, seen_t = probe.seen
    assert abs(seen_x.max().item() / 2.0 - c_in) < 1e-6 and seen_x.min() == seen_x.max()
    assert abs(seen_t.item() - 1000 * 0.25 * math.log(sigma + 1e-44)) < 1e-6
    assert (out - (c_skip * 2.0 + c_out)).abs().max().item() < 1e-6


def test_bad_flags_and_files_are_user_errors(tiny_file, tmp_path):
    unet, path = tiny_file
    with pytest.raises(UserError, match="not found"):
        load_cm(tmp_path / "absent.pt", **TINY_FLAGS)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_cm(tmp_path / "junk.pt", **TINY_FLAGS)
    with pytest.raises(UserError, match="channel_mult"):
        load_cm(path, **{**TINY_FLAGS, "channel_mult": "1,two"})
    with pytest.raises(UserError, match="build no network: 64 channels .* num_head_channels 24"):
        load_cm(path, **{**TINY_FLAGS, "num_head_channels": 24})
    state = unet.state_dict()
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(5, 5)
    torch.save(state, tmp_path / "edited.pt")
    message = (
        "1 missing keys: out.2.bias; 1 unknown keys: extra.weight; "
        "1 mis-shaped keys: time_embed.0.weight (5, 5) (network: (128, 32))"
    )
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_cm(tmp_path / "edited.pt", **TINY_FLAGS)


def test_lsun_bedroom_dataset_names_the_published_files():
    spec = datasets.get_dataset("lsun_bedroom")
    assert spec.model_url == CM_BEDROOM_URL and spec.ref_stats_url == OPENAI_BEDROOM_REF_URL
    assert spec.shape == (3, 256, 256) and spec.label_dim == 0 and spec.metric == "fid"
    assert spec.default_batch_size == 16 and spec.default_num_samples == 50_000


def test_paper_grid_runs_lsun_bedroom_at_the_pas_papers_nfe_with_batch_16():
    cells = [c for c in build_plan(load_grid("paper")) if c.dataset == "lsun_bedroom"]
    assert len(cells) == 6 * 4 * 2  # ipndm at orders 4 and 3
    assert sorted({c.nfe for c in cells}) == [5, 6, 8, 10]
    assert {c.solver for c in cells} == {"ddim", "ipndm", "deis", "dpmpp", "unipc"}
    assert {c.batch_size for c in cells} == {16} and {c.num_samples for c in cells} == {50_000}
    # --nfe on the command line replaces every dataset's list, LSUN Bedroom's too.
    chosen = Overrides(datasets=["cifar10", "lsun_bedroom"], nfe=[4])
    assert {c.nfe for c in build_plan(load_grid("paper"), chosen)} == {4}


def test_openai_reference_batch_gives_its_pool_statistics(tmp_path):
    # guided-diffusion's evaluator reads a reference batch's images from arr_0 and, when present,
    # its statistics from mu/sigma (pool_3, 2048-d) and mu_s/sigma_s (spatial, 7 x 17 x 17).
    spec = datasets.get_dataset("lsun_bedroom")
    rng = np.random.default_rng(1)
    mu, factor = rng.normal(size=FEATURE_DIM), rng.normal(size=(FEATURE_DIM, 8))
    images = np.zeros((4, 256, 256, 3), dtype=np.uint8)
    spatial = {"mu_s": np.zeros(2023), "sigma_s": np.eye(2023, dtype=np.float32)}
    batch = tmp_path / "VIRTUAL_lsun_bedroom256.npz"
    np.savez(batch, arr_0=images, mu=mu, sigma=factor @ factor.T, **spatial)
    got_mu, got_sigma = reference_stats(spec, ref_stats=batch)
    assert np.array_equal(got_mu, mu) and np.array_equal(got_sigma, factor @ factor.T)
    np.savez(tmp_path / "images_only.npz", arr_0=images)
    with pytest.raises(UserError, match="need arrays mu and sigma, found arr_0"):
        reference_stats(spec, ref_stats=tmp_path / "images_only.npz")
    np.savez(tmp_path / "spatial.npz", mu=spatial["mu_s"], sigma=spatial["sigma_s"])
    with pytest.raises(UserError, match="not Inception pool statistics"):
        reference_stats(spec, ref_stats=tmp_path / "spatial.npz")


TINY_CM_GRID = """
[grid]
datasets = ["cm_tiny"]
solvers = ["ipndm"]
nfe = [4]
pas = "both"
num_samples = 6
batch_size = 4

[pas]
trajectories = 8
teacher_nfe = 16
epochs = 3
early_stop = 2
"""


def test_tiny_checkpoint_runs_a_two_cell_grid_with_pas(tiny_file, tmp_path, monkeypatch):
    _, path = tiny_file
    spec = checkpoint_spec(
        "cm_tiny", 32, CM_BEDROOM_URL, OPENAI_BEDROOM_REF_URL, 4, 0, "tiny consistency-models net",
        partial(load_cm, **TINY_FLAGS),
    )
    monkeypatch.setitem(datasets._REGISTRY, "cm_tiny", spec)
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    out = tmp_path / "out"
    argv = ["--grid", str(write_grid(tmp_path, TINY_CM_GRID)), "--model-path", str(path),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
            "--quiet", *local_fid_options(tmp_path)]
    assert main(argv) == 0
    base, fitted = sorted(read_rows(out), key=lambda row: row["pas"])
    assert (base["pas"], fitted["pas"]) == (False, True)
    assert base["dataset"] == "cm_tiny" and base["metric"] == "fid"
    assert math.isfinite(base["value"]) and math.isfinite(fitted["value"])
    assert fitted["pas_params"] is not None and base["pas_params"] is None
    # The base cell's samples are the loaded network's ipndm solve from seeds 0-5.
    den = load_cm(path, **TINY_FLAGS)
    latents, _ = solvers.latents_for_seeds(range(6), den.shape)
    direct = solvers.sample(den, latents, "ipndm", 4, **base["options"])
    with np.load(out / base["preview"]) as preview:
        torch.testing.assert_close(torch.from_numpy(preview["samples"]), direct, rtol=0, atol=1e-4)


def test_cli_bad_checkpoint_and_offline_download_exit_2_with_one_line(
    tiny_file, tmp_path, monkeypatch, capsys
):
    _, path = tiny_file
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    out = tmp_path / "out"
    argv = ["--grid", "paper", "--datasets", "lsun_bedroom", "--solvers", "ddim", "--nfe", "5",
            "--pas", "off", "--num-samples", "2", "--out", str(out), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--quiet", *local_fid_options(tmp_path)]
    assert main([*argv, "--model-path", str(path)]) == 2  # the tiny net is not the bedroom one
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the network" in err and str(path) in err
    assert main(argv) == 2
    err = capsys.readouterr().err
    cached = tmp_path / "cache" / "downloads" / "openaipublic.blob.core.windows.net"
    assert err.count("\n") == 1 and CM_BEDROOM_URL in err
    assert str(cached / "consistency" / "edm_bedroom256_ema.pt") in err
    assert read_rows(out) == []
