"""The EDM checkpoint datasets: published EDM networks and their FID reference statistics.

Sources (NVlabs/edm README, "Pre-trained models" and "Calculating FID"):
networks under https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/ and reference statistics under
https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/. The unconditional VP networks are the ones the
solver papers (diff-solvers, PAS) evaluate; ImageNet 64x64 is EDM's class-conditional ADM
network, paired with ``imagenet-64x64.npz`` as EDM's README prescribes.

LSUN Bedroom 256 is the EDM-trained network OpenAI released with Consistency Models
(``edm_bedroom256_ema.pt``, loaded by ``bench.checkpoints.load_cm``), the one the reference
toolbox (diff-solvers) and PAS sample as ``lsun_bedroom``. Its FID reference is OpenAI's
published batch ``VIRTUAL_lsun_bedroom256.npz`` (guided-diffusion's evaluation suite), whose
``mu``/``sigma`` are pool_3 statistics of the TensorFlow FID Inception; the reference toolbox's
own ``lsun_bedroom-256x256.npz`` (collected online or made with EDM's ``fid.py``, says its
README; Google Drive only) describes other images and can be given with ``--ref-stats``.

EDM computed its statistics with its TorchScript port of the TensorFlow FID Inception; pasbench
computes features with pytorch-fid's port of the same network (see bench.inception).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.checkpoints import load_cm, load_edm
from bench.dataset_spec import DatasetSpec
from bench.downloads import cached_path, fetch, is_url
from bench.errors import UserError

PRETRAINED_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
FID_REFS_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
CM_BEDROOM_URL = "https://openaipublic.blob.core.windows.net/consistency/edm_bedroom256_ema.pt"
OPENAI_BEDROOM_REF_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/lsun/bedroom/"
    "VIRTUAL_lsun_bedroom256.npz"
)
# Both model families are trained with EDM's noise range.
_SIGMA_RANGE = {"sigma_min": 0.002, "sigma_max": 80.0}


def checkpoint_spec(
    name: str,
    resolution: int,
    model_url: str,
    ref_url: str,
    batch_size: int,
    label_dim: int,
    description: str,
    load: Callable[..., object],
) -> DatasetSpec:
    """A FID-scored image dataset whose denoiser is ``load(model_path or model_url, ...)``."""

    def build(
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        model_path: str | Path | None = None,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        **_,
    ):
        return load(
            model_path or model_url,
            device=device,
            precision=precision,
            cache_dir=cache_dir,
            dtype=dtype,
        )

    return DatasetSpec(
        name=name,
        shape=(3, resolution, resolution),
        metric="fid",
        build=build,
        default_num_samples=50_000,
        default_batch_size=batch_size,
        label_dim=label_dim,
        thresholding=True,
        description=description,
        model_url=model_url,
        ref_stats_url=ref_url,
        **_SIGMA_RANGE,
    )


def _edm_spec(
    name: str,
    resolution: int,
    model_file: str,
    ref_file: str,
    batch_size: int,
    label_dim: int,
    description: str,
) -> DatasetSpec:
    load = partial(load_edm, **_SIGMA_RANGE)
    return checkpoint_spec(
        name,
        resolution,
        PRETRAINED_URL + model_file,
        FID_REFS_URL + ref_file,
        batch_size,
        label_dim,
        description,
        load,
    )


# Batch sizes divide 50,000 and fit one 80 GB GPU with room to spare (the 64x64 nets are larger).
EDM_SPECS: list[DatasetSpec] = [
    _edm_spec(
        "cifar10",
        32,
        "edm-cifar10-32x32-uncond-vp.pkl",
        "cifar10-32x32.npz",
        500,
        0,
        "EDM CIFAR-10 32x32 unconditional VP (DDPM++)",
    ),
    _edm_spec(
        "ffhq",
        64,
        "edm-ffhq-64x64-uncond-vp.pkl",
        "ffhq-64x64.npz",
        250,
        0,
        "EDM FFHQ 64x64 unconditional VP (DDPM++)",
    ),
    _edm_spec(
        "afhqv2",
        64,
        "edm-afhqv2-64x64-uncond-vp.pkl",
        "afhqv2-64x64.npz",
        250,
        0,
        "EDM AFHQv2 64x64 unconditional VP (DDPM++)",
    ),
    _edm_spec(
        "imagenet64",
        64,
        "edm-imagenet-64x64-cond-adm.pkl",
        "imagenet-64x64.npz",
        125,
        1000,
        "EDM ImageNet 64x64 class-conditional ADM; labels drawn from each sample's seed",
    ),
]

# The consistency-models release: batch 16 as in the reference toolbox and PAS's run.sh (there
# it is also PAS's optimisation mini-batch).
CM_SPECS: list[DatasetSpec] = [
    checkpoint_spec(
        "lsun_bedroom",
        256,
        CM_BEDROOM_URL,
        OPENAI_BEDROOM_REF_URL,
        16,
        0,
        "LSUN Bedroom 256x256 unconditional, EDM-trained ADM UNet of OpenAI's Consistency Models",
        load_cm,
    ),
]


def reference_stats(
    spec: DatasetSpec, ref_stats: str | Path | None = None, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma), float64, of the FID reference: ``ref_stats`` (path or URL) or the spec's URL."""
    source = ref_stats if ref_stats is not None else spec.ref_stats_url
    if source is None:
        raise UserError(
            f"dataset {spec.name!r} has no reference statistics; pass a .npz with mu and sigma "
            "(make one with python -m bench.fid_ref)"
        )
    path = (
        fetch(str(source), cached_path(str(source), cache_dir)) if is_url(source) else Path(source)
    )
    if not path.is_file():
        raise UserError(f"reference statistics not found: {path}")
    return _read_stats(path)


def _read_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from bench.inception import FEATURE_DIM  # lazy: torchvision costs every registry user a second

    try:
        # A lazy archive: only mu and sigma are read (OpenAI's reference batches also hold images).
        with np.load(path, allow_pickle=False) as data:
            found = sorted(data.files)
            stats = {key: data[key].astype(np.float64) for key in ("mu", "sigma") if key in found}
    except (OSError, ValueError, TypeError) as err:  # TypeError: a bare .npy array
        raise UserError(
            f"cannot read reference statistics {path} (need arrays mu and sigma): {err}"
        ) from None
    if len(stats) < 2:
        raise UserError(
            f"{path} holds no reference statistics (need arrays mu and sigma, found "
            f"{', '.join(found) or 'nothing'}); statistics of an image folder: "
            "python -m bench.fid_ref"
        )
    mu, sigma = stats["mu"], stats["sigma"]
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise UserError(
            f"{path}: mu {mu.shape} and sigma {sigma.shape} are not Inception pool statistics "
            f"({FEATURE_DIM},) and ({FEATURE_DIM}, {FEATURE_DIM})"
        )
    return mu, sigma


def required_downloads(
    spec: DatasetSpec,
    model_path: str | Path | None = None,
    ref_stats: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> list[tuple[str, Path, bool]]:
    """(url, cache path, already present) for every file a run of ``spec`` would download.

    Local files given by the user are not downloads and are not listed.
    """
    wanted = [model_path or spec.model_url, ref_stats or spec.ref_stats_url]
    rows = []
    for source in wanted:
        if source is not None and is_url(source):
            path = cached_path(str(source), cache_dir)
            rows.append((str(source), path, path.is_file()))
    if spec.metric == "fid":
        from bench.inception import FID_WEIGHTS_URL, default_weights_path  # lazy, see _read_stats

        weights = default_weights_path()
        rows.append((FID_WEIGHTS_URL, weights, weights.is_file()))
    return rows
