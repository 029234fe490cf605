"""The description of one benchmark dataset: how to build its denoiser and how it is scored."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the dataset registry (architecture.md, Datasets)."""

    name: str
    shape: tuple[int, ...]
    metric: str
    build: Callable[..., object] = field(repr=False)
    default_num_samples: int = 10_000
    default_batch_size: int = 500
    label_dim: int = 0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    thresholding: bool = True
    description: str = ""
    exact_stats: Callable[[], tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)
    model_url: str | None = None
    ref_stats_url: str | None = None
    # Text-to-image datasets: default classifier-free guidance scale (None: not text-conditioned).
    guidance: float | None = None
    # (spec, model_path, ref_stats, cache_dir, **kw) -> [(source, path, present)]; None: EDM's.
    downloads: Callable[..., list] | None = field(default=None, repr=False)
    # How FID images reach Inception's 299x299 (bench.metrics.inception.RESIZES): the resize the
    # reference statistics were computed with.
    fid_resize: str = "bilinear"
