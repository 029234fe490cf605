"""fid_ref: statistics of a PNG folder equal those of the same images held in memory."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.inception import FID_WEIGHTS_URL

from bench.metrics.fid_ref import main
from bench.metrics.inception import inception_features, load_inception, to_uint8, uint8_features


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight Inception saved as a weights file, as a user would pass one."""
    model = load_inception(random_weights=True)
    path = tmp_path_factory.mktemp("inception") / "random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(to_uint8(images).permute(0, 2, 3, 1).numpy()):
        # Nested folders: the reader searches recursively.
        sub = folder / f"{index // 4:02d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(sub / f"{index:04d}.png")


def test_folder_statistics_match_the_same_tensors(tmp_path, weights, capsys):
    model, path = weights
    images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(4)) * 2 - 1
    _write_pngs(tmp_path / "imgs", images)
    out = tmp_path / "stats" / "ref.npz"
    code = main(
        [
            "--images",
            str(tmp_path / "imgs"),
            "--out",
            str(out),
            "--batch-size",
            "3",
            "--device",
            "cpu",
            "--inception-weights",
            str(path),
        ]
    )
    assert code == 0 and "5 images" in capsys.readouterr().out
    features = inception_features(model, images).numpy()
    with np.load(out) as data:
        assert sorted(data.files) == ["mu", "sigma"]
        assert data["mu"].dtype == np.float64 and data["sigma"].shape == (2048, 2048)
        scale = np.abs(np.cov(features, rowvar=False)).max()
        np.testing.assert_allclose(data["mu"], features.mean(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            data["sigma"], np.cov(features, rowvar=False), rtol=0, atol=1e-4 * scale
        )
    assert sorted(p.name for p in out.parent.iterdir()) == ["ref.npz"]


def test_center_crop_takes_the_middle_square_of_each_shape(tmp_path, weights):
    model, path = weights
    gen = torch.Generator().manual_seed(5)
    wide, tall, square = (torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
                          for h, w in ((8, 12), (12, 8), (8, 8)))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, pixels in (("a", wide), ("b", tall), ("c", square)):
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / f"{name}.png")
    out = tmp_path / "ref.npz"
    argv = ["--images", str(folder), "--out", str(out), "--center-crop", "8", "--device", "cpu",
            "--inception-weights", str(path)]
    assert main(argv) == 0
    # At the crop's own size nothing is resampled: the statistics are those of the squares.
    middles = torch.stack([wide[:, :, 2:10], tall[:, 2:10, :], square])
    features = uint8_features(model, middles).numpy()
    with np.load(out) as data:
        np.testing.assert_allclose(data["mu"], features.mean(axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "not a folder"),
        (lambda d: d.mkdir(), "no .png/.jpg images"),
        (lambda d: (d.mkdir(), (d / "a.png").write_bytes(b"not a png")), "cannot read image"),
        (
            lambda d: (
                d.mkdir(),
                Image.new("RGB", (8, 8)).save(d / "a.png"),
                Image.new("RGB", (9, 8)).save(d / "b.png"),
            ),
            "b.png is 9x8, other images are 8x8",
        ),
        (lambda d: (d.mkdir(), Image.new("L", (8, 8)).save(d / "a.png")), "at least 2 images"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, weights, capsys, make, message):
    folder = tmp_path / "imgs"
    make(folder)
    code = main(
        [
            "--images",
            str(folder),
            "--out",
            str(tmp_path / "s.npz"),
            "--device",
            "cpu",
            "--inception-weights",
            str(weights[1]),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()


def test_cli_offline_without_weights_exits_2_naming_url_and_path(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    env = {
        **os.environ,
        "PASBENCH_OFFLINE": "1",
        "TORCH_HOME": str(tmp_path / "torch"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.metrics.fid_ref",
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "s.npz"),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert FID_WEIGHTS_URL in done.stderr and str(expected) in done.stderr
    assert not expected.parent.exists()
