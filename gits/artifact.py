"""The searched GITS schedule: a self-describing JSON file (times, settings, teacher identity)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT_VERSION = 1


@dataclass
class GITSArtifact:
    """A GITS schedule and where it came from.

    ``indices`` pick ``times`` out of ``fine_times``; with AFS the second index is the inserted
    free step (``afs`` holds every candidate's final-state distance). ``evaluations`` counts the
    denoiser calls per warm-up trajectory the search made beyond the teacher's solve.
    """

    dataset: str
    model: str
    solver: str
    nfe: int
    options: dict[str, Any]
    times: list[float]
    indices: list[int]
    fine_times: list[float]
    settings: dict[str, Any]
    teacher: dict[str, Any]
    cost: list[list[float]]
    afs: dict[str, float] | None
    warmup: int
    evaluations: int
    search_seconds: float
    dtype: str
    version: int = FORMAT_VERSION

    @property
    def schedule(self) -> Tensor:
        """The float64 times to pass as ``schedule`` to ``solvers.sample``."""
        return torch.tensor(self.times, dtype=torch.float64)

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON file atomically (a reader sees the old file or the whole new one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GITSArtifact:
        """Read a saved artifact; ValueError for another format or a damaged file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read GITS artifact {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a GITS artifact of format {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
