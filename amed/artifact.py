"""The trained AMED plug-in: one self-describing JSON file (settings, teacher, weights)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from amed.features import Features, name_of, resolve
from amed.plugin import run
from amed.predictor import Predictor

FORMAT_VERSION = 1


@dataclass
class AMEDArtifact:
    """Everything needed to sample with a trained predictor and to know where it came from.

    ``predictor`` holds the Predictor's keyword settings, ``weights`` its state dict as nested
    lists; ``teacher`` the identity of the trajectories it was trained on; ``train_losses`` the
    mean per-step squared error over the last epoch.
    """

    dataset: str
    model: str
    solver: str
    nfe: int
    num_steps: int
    options: dict[str, Any]
    schedule: str | None
    sigma_min: float
    sigma_max: float
    times: list[float]
    features: str
    feature_dim: int
    predictor: dict[str, Any]
    training: dict[str, Any]
    teacher: dict[str, Any]
    train_losses: list[float]
    fit_seconds: float
    weights: dict[str, Any]
    format_version: int = field(default=FORMAT_VERSION)

    def build_predictor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> Predictor:
        """The trained predictor, in ``dtype`` on ``device``."""
        net = Predictor(self.feature_dim, **self.predictor).to(device=device, dtype=dtype)
        state = {k: torch.tensor(v, dtype=torch.float64) for k, v in self.weights.items()}
        net.load_state_dict(state)
        return net.eval().requires_grad_(False)

    def sample(
        self,
        denoiser,
        latents: Tensor,
        *,
        features: Features | None = None,
        class_labels: Tensor | None = None,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample with exactly ``self.nfe`` denoiser calls (see ``amed.sample``); the features
        must come from the source the predictor was trained on."""
        features = resolve(denoiser, features)
        if name_of(features) != self.features:
            raise ValueError(
                f"the AMED predictor was trained on {self.features!r} features, "
                f"not {name_of(features)!r}"
            )
        predictor = self.build_predictor(latents.dtype, latents.device)
        with torch.no_grad():
            return run(
                denoiser, latents, self.solver, self.times, self.options, predictor, features,
                class_labels=class_labels, return_trajectory=return_trajectory,
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the JSON through a temporary file renamed into place (never half-written)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json())
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)

    @classmethod
    def load(cls, path: str | Path) -> AMEDArtifact:
        """The artifact saved at ``path``; ValueError when the file is not one this code reads."""
        names = [f.name for f in fields(cls)]
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("format_version") != FORMAT_VERSION
            or not set(names) <= set(data)
        ):
            raise ValueError(
                f"{path} is not an AMED artifact (a JSON object with format_version "
                f"{FORMAT_VERSION} and the fields {', '.join(names)})"
            )
        return cls(**{name: data[name] for name in names})


def weights_of(predictor: Predictor) -> dict[str, Any]:
    """A predictor's state dict as nested lists of floats (exact for float32 and float64)."""
    return {k: v.detach().cpu().double().tolist() for k, v in predictor.state_dict().items()}
