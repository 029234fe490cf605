"""The ``ms_coco`` dataset: Stable Diffusion v1.5 on MS-COCO val2014 captions, FID and CLIP score.

The model is SD v1.5 in diffusers format (bench.models.sd), by default the community-maintained
repository ``stable-diffusion-v1-5/stable-diffusion-v1-5`` on the Hugging Face Hub; sample n is
conditioned on caption n of the 30k-caption CSV (bench.models.prompts) with classifier-free guidance
(7.5 by default). FID's reference is, by default, the MS-COCO val2014 statistics published with
that captions file (boomb0om/text2image-benchmark release v0.0.1), computed with pytorch-fid's
Inception after its "clean" resize; the decoded images get the same resize before Inception
(bench.metrics.inception.clean_resize). Other statistics (the reference toolbox's
``ms_coco-512x512.npz``, or ``python -m bench.metrics.fid_ref --center-crop 512`` over COCO val2014
images) go in with ``--ref-stats ms_coco=PATH``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.downloads import cached_path, is_url
from bench.models.prompts import (
    BENCHMARK_RELEASE_URL,
    COCO_CAPTIONS_URL,
    captions_path,
    read_captions,
    single_prompt,
)
from bench.models.sd import (
    SD_HUB_ID,
    SD_MODEL_URL,
    SDDenoiser,
    hub_cache,
    load_sd,
    scaled_linear_alphas,
    sigma_range,
)
from bench.models.spec import DatasetSpec

DEFAULT_GUIDANCE = 7.5
COCO_FID_STATS_URL = BENCHMARK_RELEASE_URL + "MS-COCO_val2014_fid_stats.npz"


def text_conditioning(guidance: float | None, prompt: str | None, captions: str | None) -> dict[str, Any]:
    """The text conditioning of a run (part of every cell's identity): guidance scale and either
    one prompt for all seeds or a captions CSV (path or URL; default the MS-COCO 30k file)."""
    return {"guidance": float(DEFAULT_GUIDANCE if guidance is None else guidance),
            "prompt": prompt, "captions": None if prompt else (captions or COCO_CAPTIONS_URL)}


def check_captions(conditioning: dict[str, Any], num_samples: int, with_pas: bool,
                   cache_dir: str | Path | None = None) -> None:
    """``UserError`` when the captions file (if already local) lacks captions for the samples."""
    source = conditioning["captions"]
    if source is None:
        return
    path = cached_path(source, cache_dir) if is_url(source) else Path(source)
    if path.is_file() or not is_url(source):
        read_captions(captions_path(str(path))).check_evaluation(num_samples, with_pas)


def build(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
          model_path: str | Path | None = None, precision: str = "fp32",
          cache_dir: str | Path | None = None, conditioning: dict[str, Any] | None = None,
          **_) -> SDDenoiser:
    """The SD denoiser conditioned as ``conditioning`` says (see :func:`conditioning`)."""
    cond = conditioning or text_conditioning(None, None, None)
    prompts = (single_prompt(cond["prompt"]) if cond["prompt"]
               else read_captions(captions_path(cond["captions"], cache_dir)))
    parts = load_sd(model_path, device=device, precision=precision, dtype=dtype,
                    cache_dir=cache_dir)
    return SDDenoiser(parts, prompts, guidance=cond["guidance"], dtype=dtype)


def required_downloads(spec: DatasetSpec, model_path: str | Path | None = None,
                       ref_stats: str | Path | None = None, cache_dir: str | Path | None = None,
                       conditioning: dict[str, Any] | None = None,
                       clip_model: str | None = None) -> list[tuple[str, Path, bool]]:
    """(source, cache path, already present) for every file or Hub snapshot a run would fetch."""
    from bench.metrics.clip_score import CLIP_MODEL_ID
    from bench.metrics.inception import FID_WEIGHTS_URL, default_weights_path

    rows = []
    hub = hub_cache(cache_dir)
    if model_path is None:
        rows.append(_hub_row(SD_HUB_ID, hub))
    elif is_url(model_path):
        rows.append(_file_row(str(model_path), cached_path(str(model_path), cache_dir)))
        rows.append(_hub_row(SD_HUB_ID, hub))  # the component configs of from_single_file
    captions = (conditioning or {}).get("captions")
    if captions and is_url(captions):
        rows.append(_file_row(captions, cached_path(captions, cache_dir)))
    if clip_model is None or not Path(clip_model).is_dir():
        rows.append(_hub_row(clip_model or CLIP_MODEL_ID, hub))
    reference = ref_stats or spec.ref_stats_url
    if reference is not None and is_url(reference):
        rows.append(_file_row(str(reference), cached_path(str(reference), cache_dir)))
    rows.append(_file_row(FID_WEIGHTS_URL, default_weights_path()))
    return rows


def _file_row(url: str, path: Path) -> tuple[str, Path, bool]:
    return url, path, path.is_file()


def _hub_row(repo_id: str, hub: Path) -> tuple[str, Path, bool]:
    """A Hub repository and its snapshot folder in huggingface_hub's cache layout."""
    snapshots = hub / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return f"hub:{repo_id}", snapshots, snapshots.is_dir() and any(snapshots.iterdir())


_SIGMA_MIN, _SIGMA_MAX = sigma_range(scaled_linear_alphas())

MS_COCO = DatasetSpec(
    name="ms_coco",
    shape=(4, 64, 64),
    metric="fid",
    build=build,
    default_num_samples=10_000,
    default_batch_size=6,
    sigma_min=_SIGMA_MIN,
    sigma_max=_SIGMA_MAX,
    thresholding=False,
    description="Stable Diffusion v1.5 latents, MS-COCO val2014 captions, guidance 7.5; FID and "
                "CLIP score of the 512x512 decoded images",
    model_url=SD_MODEL_URL,
    ref_stats_url=COCO_FID_STATS_URL,
    guidance=DEFAULT_GUIDANCE,
    downloads=required_downloads,
    fid_resize="clean",
)
