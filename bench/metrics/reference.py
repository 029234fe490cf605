"""FID reference statistics: (mu, sigma) of Inception pool features, read from a .npz or a URL.

EDM's ``fid-refs`` files and the statistics ``bench.metrics.fid_ref`` writes hold ``mu`` and
``sigma``; OpenAI's reference batches hold them beside images and spatial statistics, of which
only ``mu``/``sigma`` are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.downloads import cached_path, fetch, is_url
from bench.errors import UserError

if TYPE_CHECKING:
    from bench.models.spec import DatasetSpec


def reference_stats(
    spec: DatasetSpec, ref_stats: str | Path | None = None, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma), float64, of the FID reference: ``ref_stats`` (path or URL) or the spec's URL."""
    source = ref_stats if ref_stats is not None else spec.ref_stats_url
    if source is None:
        raise UserError(
            f"dataset {spec.name!r} has no reference statistics; pass a .npz with mu and sigma "
            "(make one with python -m bench.metrics.fid_ref)"
        )
    path = (
        fetch(str(source), cached_path(str(source), cache_dir)) if is_url(source) else Path(source)
    )
    if not path.is_file():
        raise UserError(f"reference statistics not found: {path}")
    return _read_stats(path)


def _read_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from bench.metrics.inception import FEATURE_DIM  # lazy: torchvision takes a second to import

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
            "python -m bench.metrics.fid_ref"
        )
    mu, sigma = stats["mu"], stats["sigma"]
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise UserError(
            f"{path}: mu {mu.shape} and sigma {sigma.shape} are not Inception pool statistics "
            f"({FEATURE_DIM},) and ({FEATURE_DIM}, {FEATURE_DIM})"
        )
    return mu, sigma
