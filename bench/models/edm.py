"""The EDM checkpoint datasets: published EDM networks and their FID reference statistics.

Sources (NVlabs/edm README, "Pre-trained models" and "Calculating FID"):
networks under https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/ and reference statistics under
https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/. The unconditional VP networks are the ones the
solver papers (diff-solvers, PAS) evaluate; ImageNet 64x64 is EDM's class-conditional ADM
network, paired with ``imagenet-64x64.npz`` as EDM's README prescribes.

EDM computed its statistics with its TorchScript port of the TensorFlow FID Inception; pasbench
computes features with pytorch-fid's port of the same network (see bench.metrics.inception).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.downloads import cached_path, is_url
from bench.models.checkpoints import load_edm
from bench.models.spec import DatasetSpec

PRETRAINED_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
FID_REFS_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
# EDM's noise range; the consistency-models bedroom network (bench.models.cm) is trained with it too.
SIGMA_RANGE = {"sigma_min": 0.002, "sigma_max": 80.0}


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
        **SIGMA_RANGE,
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
    load = partial(load_edm, **SIGMA_RANGE)
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
        # lazy: torchvision costs every registry user a second
        from bench.metrics.inception import FID_WEIGHTS_URL, default_weights_path

        weights = default_weights_path()
        rows.append((FID_WEIGHTS_URL, weights, weights.is_file()))
    return rows
