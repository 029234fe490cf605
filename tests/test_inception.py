"""Inception features: pytorch-fid's FID network, built offline, fed 8-bit images."""

import pytest
import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from bench.errors import UserError
from bench.metrics.inception import (
    clean_resize,
    default_weights_path,
    inception_features,
    load_inception,
    to_uint8,
    uint8_features,
)


@pytest.fixture(scope="module")
def model():
    return load_inception(random_weights=True)


@pytest.fixture
def images():
    return (
        torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        * 2
        - 1
    )


def test_random_weights_build_pytorch_fids_network_without_any_file(
    tmp_path, monkeypatch, model, images
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    again = load_inception(random_weights=True)
    assert list(tmp_path.iterdir()) == []
    assert isinstance(again, InceptionV3) and again.output_blocks == [3] and not again.training
    features = inception_features(again, images)
    assert features.shape == (3, 2048) and features.dtype == torch.float64
    assert torch.equal(features, inception_features(model, images))  # seeded: the same every time
    assert features.std(dim=0).max() > 1e-3  # distinct images, distinct features


# pytorch-fid's InceptionV3 blocks hold these torchvision Inception3 layers, in this order.
BLOCK_LAYERS = [
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    ["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    [
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
    ],
    ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
]


def _released_format(state_dict):
    """The same weights under the names of pytorch-fid's released file (plus its 1008-way fc)."""
    renamed = {}
    for key, value in state_dict.items():
        _, block, index, rest = key.split(".", 3)
        renamed[f"{BLOCK_LAYERS[int(block)][int(index)]}.{rest}"] = value
    return {**renamed, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}


@pytest.mark.parametrize("released", [True, False])
def test_weights_file_round_trip(tmp_path, model, images, released):
    path = tmp_path / "weights.pth"
    state = model.state_dict()
    torch.save(_released_format(state) if released else state, path)
    loaded = load_inception(weights=path)
    assert torch.equal(inception_features(loaded, images), inception_features(model, images))


def test_bad_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_inception(weights=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read Inception weights"):
        load_inception(weights=tmp_path / "junk.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="do not fit"):
        load_inception(weights=tmp_path / "other.pth")


def test_missing_default_weights_offline_name_the_file_and_its_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert default_weights_path() == expected
    with pytest.raises(UserError) as err:
        load_inception()
    assert FID_WEIGHTS_URL in str(err.value) and f"place it at {expected}" in str(err.value)


def test_images_are_quantised_like_edm_png_export(model, images):
    edges = torch.tensor([-1.5, -1.0, -0.5 / 127.5, 0.0, 1.0, 2.0], dtype=torch.float64)
    assert to_uint8(edges).tolist() == [0, 0, 127, 128, 255, 255]
    pixels = to_uint8(images)
    assert torch.equal(inception_features(model, images), uint8_features(model, pixels))
    grey = pixels[:, :1]
    assert torch.equal(
        uint8_features(model, grey), uint8_features(model, grey.expand(-1, 3, -1, -1))
    )


def test_clean_resize_crops_the_center_square_and_resizes_bicubic():
    # 20 rows x 40 columns: the center 20x20 square is a ramp 0, 10, ..., 190 along the columns,
    # the 10 columns either side are 255 (cropped away).
    pixels = torch.full((2, 3, 20, 40), 255, dtype=torch.uint8)
    pixels[..., 10:30] = (torch.arange(20) * 10).to(torch.uint8)
    out = clean_resize(pixels)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.uint8
    assert out.max() <= 200  # nothing of the 255 borders survives
    # Bicubic reproduces a linear ramp away from the edges: output column u samples the source at
    # (u + 0.5) * 20 / 299 - 0.5, so its value is 10 times that, up to the 8-bit rounding.
    where = (torch.arange(299, dtype=torch.float64) + 0.5) * 20 / 299 - 0.5
    inner = (where >= 2) & (where <= 17)
    expected = 10 * where[inner]
    assert (out[..., inner].double() - expected).abs().max() <= 0.5 + 1e-9
    assert (out == out[:, :, :1]).all()  # every row alike, as the source's


def test_clean_resize_keeps_a_flat_grey_image_exactly():
    pixels = torch.full((1, 1, 64, 48), 77, dtype=torch.uint8)
    assert (clean_resize(pixels) == 77).all() and clean_resize(pixels).shape == (1, 1, 299, 299)
