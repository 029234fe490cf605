"""Inception pool features for FID, through pytorch-fid's InceptionV3.

pytorch-fid's network with its FID weights (``pt_inception-2015-12-05``) is a port of the
TensorFlow Inception graph that defines FID, the same network EDM's ``fid.py`` uses (EDM loads a
TorchScript port of it). The 2048-d pool features are therefore comparable with the ``mu`` and
``sigma`` in EDM's published ``fid-refs/*.npz``. They are not bit-identical: the two ports resize
images to 299x299 with different bilinear kernels, which typically moves an FID by a few
hundredths. For exact agreement build your own reference with ``python -m bench.metrics.fid_ref``.

Images are quantised to 8 bits first, with EDM's PNG export rule, so features computed in memory
equal those computed from the PNG files the reference pipelines write. How they then reach 299x299
follows the dataset's reference statistics (``RESIZES``): pytorch-fid's own bilinear resize inside
the network, or the "clean" resize of the text-to-image benchmark whose MS-COCO statistics
ms_coco uses (center crop, PIL bicubic to 299x299, rounded back to 8 bits).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytorch_fid.inception as fid_inception
import torch
from torch import Tensor

from bench.downloads import fetch
from bench.errors import UserError

FID_WEIGHTS_URL = fid_inception.FID_WEIGHTS_URL
FEATURE_DIM = 2048
_POOL_BLOCK = fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]
INCEPTION_SIZE = 299
# What each resize does (stated in the README and, by name, in every FID row's fid_resize).
RESIZES = {
    "bilinear": "pytorch-fid's bilinear resize to 299x299 inside the network",
    "clean": "center crop to a square, PIL bicubic resize to 299x299, rounded to 8 bits",
}


def default_weights_path() -> Path:
    """Where pytorch-fid (through torch.hub) keeps the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]


def load_inception(
    weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    random_weights: bool = False,
) -> fid_inception.InceptionV3:
    """pytorch-fid's ``InceptionV3([3])`` in eval mode on ``device``.

    ``weights``: a state-dict file, either pytorch-fid's released file (torchvision Inception
    names) or one saved from this module (``model.state_dict()``); by default the torch hub cache
    file, downloaded there when missing (offline, that fails with the URL and the path to put
    the file at). ``random_weights``: a fixed, seeded random initialisation, no file (for tests).
    """
    if random_weights:
        return _build(state_dict=None).eval().requires_grad_(False).to(device)
    path = Path(weights) if weights is not None else fetch(FID_WEIGHTS_URL, default_weights_path())
    if not path.is_file():
        raise UserError(
            f"Inception weights not found: {path} (download them from {FID_WEIGHTS_URL})"
        )
    state_dict = _read_weights(path)
    if any(key.startswith("blocks.") for key in state_dict):  # saved from InceptionV3 itself
        model = _build(state_dict=None)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as err:
            raise _misfit(err) from None
    else:
        model = _build(state_dict=state_dict)
    return model.eval().requires_grad_(False).to(device)


def _read_weights(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch.load fails in many ways on a bad file)
        raise UserError(f"cannot read Inception weights {path}: {err}") from None


def _build(state_dict: dict[str, Tensor] | None) -> fid_inception.InceptionV3:
    """Build pytorch-fid's FID Inception, loading ``state_dict`` instead of downloading.

    pytorch-fid's ``fid_inception_v3`` creates torchvision's Inception, swaps in the FID blocks
    and then loads weights through its module-level ``load_state_dict_from_url``. Replacing that
    function (and noting the network it is building) lets the same code run offline; with no
    state dict the network loads its own freshly initialised weights.
    """
    building = []

    def make_base(*args, **kwargs):
        net = original_base(*args, **kwargs)
        building.append(net)
        return net

    def load(url, **_):
        return state_dict if state_dict is not None else building[-1].state_dict()

    original_base = fid_inception._inception_v3
    with (
        mock.patch.object(fid_inception, "_inception_v3", make_base),
        mock.patch.object(fid_inception, "load_state_dict_from_url", load),
        torch.random.fork_rng(devices=[]),
    ):
        torch.manual_seed(0)
        try:
            model = fid_inception.InceptionV3([_POOL_BLOCK])
        except RuntimeError as err:  # a state dict of another network
            raise _misfit(err) from None
    if state_dict is None:
        _scale_random_init(model)
    return model


def _misfit(err: RuntimeError) -> UserError:
    first_line = str(err).strip().splitlines()[0]
    return UserError(f"the Inception weights do not fit pytorch-fid's FID Inception: {first_line}")


def _scale_random_init(model: torch.nn.Module) -> None:
    # PyTorch's default conv init shrinks activations through Inception's ~100 layers towards
    # zero; He-normal weights keep random features O(1), so tests compare meaningful numbers.
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] as 8-bit pixels, by EDM's PNG export rule floor(x*127.5 + 128), clipped."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def uint8_features(model: torch.nn.Module, pixels: Tensor) -> Tensor:
    """Pool features, float64 ``[B, 2048]``, of 8-bit images ``[B, C, H, W]`` (C = 1 or 3).

    pytorch-fid's module resizes to 299x299 and rescales [0, 1] to its own input range.
    """
    device = next(model.parameters()).device
    x = pixels.to(device=device, dtype=torch.float32) / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise UserError(f"Inception needs 1 or 3 channels, got images shaped {tuple(pixels.shape)}")
    with torch.no_grad():
        features = model(x)[0]
    return features.reshape(features.shape[0], -1).double()


def clean_resize(pixels: Tensor) -> Tensor:
    """8-bit images ``[B, C, H, W]`` center-cropped to a square and resized to 299x299 with PIL's
    bicubic filter, rounded back to 8 bits (the "clean" resize)."""
    from PIL import Image  # lazy: only the clean resize needs it

    side = min(pixels.shape[-2:])
    top, left = (pixels.shape[-2] - side) // 2, (pixels.shape[-1] - side) // 2
    square = pixels[..., top:top + side, left:left + side].permute(0, 2, 3, 1).cpu().numpy()
    size = (INCEPTION_SIZE, INCEPTION_SIZE)
    resized = [np.asarray(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
                          .resize(size, resample=Image.BICUBIC)) for image in square]
    stacked = np.stack(resized).reshape(len(resized), *size, -1)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def inception_features(model: torch.nn.Module, images: Tensor, resize: str = "bilinear") -> Tensor:
    """Pool features, float64 ``[B, 2048]``, of images in [-1, 1] (quantised to 8 bits first),
    brought to 299x299 by ``resize`` (a key of ``RESIZES``)."""
    pixels = to_uint8(images)
    return uint8_features(model, clean_resize(pixels) if resize == "clean" else pixels)
