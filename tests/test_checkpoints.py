"""EDM checkpoints: persistent pickles load without EDM's code, as Denoisers, with labels."""

import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from edm_format import tiny_network, write_edm_pickle
from PIL import Image

import solvers
from bench.errors import UserError
from bench.metrics.inception import load_inception
from bench.metrics.reference import reference_stats
from bench.models.checkpoints import load_edm
from bench.models.edm import EDM_SPECS, FID_REFS_URL, PRETRAINED_URL, required_downloads
from bench.models.registry import get_dataset

LOADER = """
import importlib.util, sys, torch
assert importlib.util.find_spec("torch_utils") is None, "torch_utils must not be importable here"
assert importlib.util.find_spec("dnnlib") is None, "dnnlib must not be importable here"
from bench.models.checkpoints import load_edm
den = load_edm(sys.argv[1])
inputs = torch.load(sys.argv[2])
out = den(inputs["x"], inputs["sigma"], inputs["labels"])
leftover = sorted(m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib"))
torch.save({"out": out, "attrs": [den.name, den.shape, den.label_dim, den.sigma_min, den.sigma_max],
            "leftover": leftover}, sys.argv[3])
"""


@pytest.fixture
def cond_pickle(tmp_path):
    net, loss = tiny_network(img_resolution=8, label_dim=5, seed=3)
    return net, write_edm_pickle(tmp_path / "tiny-cond.pkl", net, loss)


@pytest.mark.invariance
def test_persistent_pickle_loads_in_a_fresh_process_without_edm_code(tmp_path, cond_pickle):
    net, path = cond_pickle
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = {
        "x": x,
        "sigma": torch.tensor(2.5, dtype=torch.float64),
        "labels": torch.eye(5)[[0, 4, 2]],
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADER,
            str(path),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = torch.load(tmp_path / "out.pt")
    expected = net(x, inputs["sigma"], inputs["labels"])
    assert result["out"].dtype == torch.float64
    # Another process with another thread count: the float32 convolutions may sum in another order.
    torch.testing.assert_close(result["out"], expected.double(), rtol=1e-5, atol=1e-6)
    assert result["attrs"] == ["tiny-cond", (3, 8, 8), 5, 0.002, 80.0]
    assert result["leftover"] == []


def test_stand_in_modules_exist_only_while_unpickling(monkeypatch, cond_pickle):
    _, path = cond_pickle
    sentinel = types.ModuleType("dnnlib")
    monkeypatch.setitem(sys.modules, "dnnlib", sentinel)
    monkeypatch.delitem(sys.modules, "torch_utils", raising=False)
    load_edm(path)
    assert sys.modules["dnnlib"] is sentinel
    assert "torch_utils" not in sys.modules and "torch_utils.persistence" not in sys.modules


def test_low_precision_autocasts_the_network_only(cond_pickle):
    _, path = cond_pickle
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma, labels = torch.tensor(0.7, dtype=torch.float64), torch.eye(5)[[1, 3]]
    full = load_edm(path)(x, sigma, labels)
    half = load_edm(path, precision="bf16")(x, sigma, labels)
    assert half.dtype == torch.float64
    assert not torch.equal(half, full)
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)
    with pytest.raises(UserError, match="precision"):
        load_edm(path, precision="fp8")


def test_sigma_range_is_the_requested_one_clipped_to_the_network(tmp_path):
    narrow, _ = tiny_network(sigma_min=0.01, sigma_max=50.0)
    den = load_edm(write_edm_pickle(tmp_path / "narrow.pkl", narrow))
    assert (den.sigma_min, den.sigma_max) == (0.01, 50.0)


def test_unreadable_or_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_edm(tmp_path / "absent.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read EDM checkpoint"):
        load_edm(tmp_path / "junk.pkl")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(UserError, match="no EDM network"):
        load_edm(tmp_path / "dict.pkl")


def test_conditional_dataset_feeds_the_network_labels_drawn_from_each_seed(tmp_path):
    spec = get_dataset("imagenet64")
    net, _ = tiny_network(img_resolution=64, label_dim=1000, seed=5)
    den = spec.build(model_path=write_edm_pickle(tmp_path / "cond64.pkl", net), dtype=torch.float64)
    assert den.label_dim == spec.label_dim == 1000 and den.shape == spec.shape
    seen = []
    den.net.register_forward_pre_hook(lambda module, args: seen.append(args[2]))
    seeds = [7, 11, 12]
    latents, labels = solvers.latents_for_seeds(
        seeds, den.shape, dtype=torch.float64, label_dim=den.label_dim
    )
    samples = solvers.sample(den, latents, "ddim", 3, class_labels=labels)
    expected = []
    for seed in seeds:  # the seed rule, written out: latent first, then the class
        gen = torch.Generator().manual_seed(seed)
        torch.randn(den.shape, generator=gen, dtype=torch.float64)
        expected.append(torch.randint(1000, (1,), generator=gen).item())
    assert len(seen) == 3 and all(torch.equal(s.argmax(1), torch.tensor(expected)) for s in seen)
    other = solvers.sample(den, latents, "ddim", 3, class_labels=labels.roll(1, dims=0))
    assert not torch.allclose(samples, other)


def test_runner_samples_a_conditional_checkpoint_with_each_seeds_class(tmp_path):
    # The network paints each image a grey that encodes its class, so the saved PNGs show
    # which label every seed's sample was drawn with.
    net, _ = tiny_network(img_resolution=64, label_dim=1000, kind="LabelPainter")
    model = write_edm_pickle(tmp_path / "painter.pkl", net)
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    torch.save(load_inception(random_weights=True).state_dict(), tmp_path / "inception.pth")
    command = [sys.executable, "-m", "bench.run", "--grid", "paper", "--datasets", "imagenet64"]
    command += ["--solvers", "ddim", "--nfe", "4", "--pas", "off", "--num-samples", "5"]
    command += ["--batch-size", "2", "--device", "cpu", "--model-path", str(model)]
    command += ["--ref-stats", str(tmp_path / "ref.npz"), "--inception-weights"]
    command += [str(tmp_path / "inception.pth"), "--out", str(tmp_path / "rows")]
    command += ["--save-images", str(tmp_path / "images"), "--quiet"]
    env = {**os.environ, "PASBENCH_CACHE": str(tmp_path / "cache"), "PASBENCH_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, env=env, capture_output=True, check=False, text=True)
    assert done.returncode == 0, done.stderr
    pngs = sorted((tmp_path / "images").rglob("*.png"))
    assert [p.name for p in pngs] == [f"{seed:06d}.png" for seed in range(5)]
    for seed, png in enumerate(pngs):
        gen = torch.Generator().manual_seed(seed)
        torch.randn((3, 64, 64), generator=gen, dtype=torch.float64)
        label = torch.randint(1000, (1,), generator=gen).item()
        # 8-bit export floors x * 127.5 + 128; adjacent classes are 0.26 levels apart, random
        # ones about 85, so a seed drawn with another label (or none) lands far off.
        level = (label * (2.0 / 999) - 1) * 127.5 + 127.5
        pixels = np.asarray(Image.open(png), dtype=np.float64)
        assert abs(pixels.mean() - level) < 1.0 and np.abs(pixels - level).max() < 3.0


def test_edm_specs_name_the_published_files():
    by_name = {spec.name: spec for spec in EDM_SPECS}
    assert list(by_name) == ["cifar10", "ffhq", "afhqv2", "imagenet64"]
    assert by_name["cifar10"].model_url == PRETRAINED_URL + "edm-cifar10-32x32-uncond-vp.pkl"
    assert by_name["imagenet64"].model_url == PRETRAINED_URL + "edm-imagenet-64x64-cond-adm.pkl"
    assert by_name["ffhq"].ref_stats_url == FID_REFS_URL + "ffhq-64x64.npz"
    assert [s.label_dim for s in EDM_SPECS] == [0, 0, 0, 1000]
    assert [s.shape for s in EDM_SPECS] == [(3, 32, 32)] + [(3, 64, 64)] * 3
    for spec in EDM_SPECS:
        assert spec.metric == "fid" and spec.default_num_samples == 50_000 and spec.thresholding
        assert 50_000 % spec.default_batch_size == 0 and spec.exact_stats is None


def test_required_downloads_lists_missing_files_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = get_dataset("cifar10")
    rows = required_downloads(spec, cache_dir=tmp_path)
    assert [url for url, _, _ in rows][:2] == [spec.model_url, spec.ref_stats_url]
    assert (
        rows[2][1]
        == tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    )
    assert [present for _, _, present in rows] == [False, False, False]
    model_path = rows[0][1]
    assert (
        model_path.is_relative_to(tmp_path) and model_path.name == "edm-cifar10-32x32-uncond-vp.pkl"
    )
    model_path.parent.mkdir(parents=True)
    model_path.write_bytes(b"x")
    assert required_downloads(spec, cache_dir=tmp_path)[0][2] is True
    local = required_downloads(
        spec, model_path=tmp_path / "mine.pkl", ref_stats=tmp_path / "s.npz", cache_dir=tmp_path
    )
    assert [url for url, _, _ in local] == [rows[2][0]]


def test_reference_stats_from_a_local_file_and_bad_files(tmp_path):
    spec = get_dataset("cifar10")
    mu, sigma = np.arange(2048, dtype=np.float32), np.eye(2048, dtype=np.float32)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    got_mu, got_sigma = reference_stats(spec, ref_stats=tmp_path / "ref.npz")
    assert (
        got_mu.dtype == np.float64
        and np.array_equal(got_mu, mu)
        and np.array_equal(got_sigma, sigma)
    )
    np.savez(tmp_path / "no_sigma.npz", mu=mu)
    with pytest.raises(UserError, match="mu and sigma"):
        reference_stats(spec, ref_stats=tmp_path / "no_sigma.npz")
    np.savez(tmp_path / "small.npz", mu=mu[:64], sigma=sigma[:64, :64])
    with pytest.raises(UserError, match="not Inception pool statistics"):
        reference_stats(spec, ref_stats=tmp_path / "small.npz")
    with pytest.raises(UserError, match="not found"):
        reference_stats(spec, ref_stats=tmp_path / "absent.npz")
