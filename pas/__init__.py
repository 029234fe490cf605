"""PAS (PCA-based Adaptive Search): a few learned coordinates that correct a fast solver's steps.

``pas.fit(denoiser, solver, nfe, ...)`` returns a ``PASArtifact``; pass ``artifact.correction()``
to ``solvers.sample(..., correction=...)`` to sample with it. See pas-spec.md.

pas uses ``solvers`` only. ``python -m pas fit --dataset NAME`` finds datasets through the
``pas.datasets`` entry point that an installed package declares (pasbench: bench.models), so the
package never imports the benchmark (docs/layout.md).
"""

from pas.adaptive import fit, student_request, teacher_seeds
from pas.artifact import PASArtifact, PASCorrection, StepSearch
from pas.cache import default_cache_dir
from pas.teacher import TeacherRequest, shared_grid, stored_teacher, teacher_states

__all__ = [
    "PASArtifact",
    "PASCorrection",
    "StepSearch",
    "TeacherRequest",
    "default_cache_dir",
    "fit",
    "shared_grid",
    "stored_teacher",
    "student_request",
    "teacher_seeds",
    "teacher_states",
]
