"""AMED plug-in (CVPR 2024): a tiny learned predictor places an intermediate time in every step
of euler (ddim), ipndm or dpmpp, so that N steps cost 2N denoiser calls (2N - 1 with AFS).

``amed.fit(denoiser, solver, nfe, teacher=..., features=...)`` returns an ``AMEDArtifact``;
``amed.sample(denoiser, latents, artifact)`` samples with it. See amed/plugin.py for the step.
"""

from torch import Tensor

from amed.artifact import AMEDArtifact
from amed.features import Features, pool_map, pooled_input
from amed.fit import fit, fit_evaluations, heun_teacher, squared_error, step_losses
from amed.plugin import (
    BASES,
    PluginRun,
    Prediction,
    nfe_for_steps,
    plugin_times,
    steps_for_nfe,
)
from amed.predictor import Predictor


def sample(denoiser, latents: Tensor, artifact: AMEDArtifact, **kwargs) -> Tensor | tuple:
    """``artifact.sample(denoiser, latents, features=None, class_labels=None,
    return_trajectory=False)``: exactly ``artifact.nfe`` denoiser calls."""
    return artifact.sample(denoiser, latents, **kwargs)


__all__ = [
    "BASES",
    "AMEDArtifact",
    "Features",
    "PluginRun",
    "Prediction",
    "Predictor",
    "fit",
    "fit_evaluations",
    "heun_teacher",
    "nfe_for_steps",
    "plugin_times",
    "pool_map",
    "pooled_input",
    "sample",
    "squared_error",
    "step_losses",
    "steps_for_nfe",
]
