"""The dataset registry: every benchmark dataset by name (architecture.md, Datasets)."""
from __future__ import annotations

from bench.analytic import ANALYTIC_SPECS
from bench.dataset_spec import DatasetSpec
from bench.edm import CM_SPECS, EDM_SPECS
from bench.ms_coco import MS_COCO

_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> None:
    """Add ``spec`` to the registry; a second spec with the same name is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def dataset_names() -> list[str]:
    """Registered dataset names, in registration order."""
    return list(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(_REGISTRY)}") from None


for _spec in (*ANALYTIC_SPECS, *EDM_SPECS, *CM_SPECS, MS_COCO):
    register(_spec)
