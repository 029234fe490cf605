"""GITS: a solver's time schedule searched on a fine grid by dynamic programming (ICML 2024).

``gits.cost_matrix`` and ``gits.dp`` are the two pieces of the search; ``gits.fit`` runs both on a
teacher trajectory and returns a ``GITSArtifact`` whose ``schedule`` any solver can sample with.
"""

from gits.artifact import GITSArtifact
from gits.fit import DEFAULTS, fine_grid, fit, teacher_directions
from gits.search import METRICS, afs_path, cost_matrix, dp, path_cost

__all__ = [
    "DEFAULTS",
    "METRICS",
    "GITSArtifact",
    "afs_path",
    "cost_matrix",
    "dp",
    "fine_grid",
    "fit",
    "path_cost",
    "teacher_directions",
]
