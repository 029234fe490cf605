"""EDM checkpoint datasets (placeholder; filled in by the checkpoint work)."""
from __future__ import annotations

from bench.dataset_spec import DatasetSpec

EDM_SPECS: list[DatasetSpec] = []
