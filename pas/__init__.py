"""PAS (PCA-based Adaptive Search): a few learned coordinates that correct a fast solver's steps.

``pas.fit(denoiser, solver, nfe, ...)`` returns a ``PASArtifact``; pass ``artifact.correction()``
to ``solvers.sample(..., correction=...)`` to sample with it. See pas-spec.md.
"""

from pas.adaptive import fit
from pas.artifact import PASArtifact, PASCorrection, StepSearch
from pas.cache import default_cache_dir

__all__ = ["PASArtifact", "PASCorrection", "StepSearch", "default_cache_dir", "fit"]
