"""The dataset registry: every benchmark dataset by name (architecture.md, Datasets).

A new model family is one module in bench.models and one line at the end of this file.
"""
from __future__ import annotations

from dataclasses import replace

from bench.errors import UserError
from bench.models.analytic import ANALYTIC_SPECS
from bench.models.cm import CM_SPECS
from bench.models.edm import EDM_SPECS
from bench.models.ms_coco import MS_COCO
from bench.models.spec import DatasetSpec

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


def pas_dataset(name: str) -> DatasetSpec:
    """``get_dataset`` for ``python -m pas`` (entry point ``pas.datasets`` in pyproject.toml).

    The pas command line reports ValueError as one line, so a build's UserError (a missing
    checkpoint, say) is passed on as one.
    """
    spec = get_dataset(name)

    def build(**kwargs):
        try:
            return spec.build(**kwargs)
        except UserError as err:
            raise ValueError(str(err)) from None

    return replace(spec, build=build)


for _spec in (*ANALYTIC_SPECS, *EDM_SPECS, *CM_SPECS, MS_COCO):
    register(_spec)
