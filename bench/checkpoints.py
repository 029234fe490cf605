"""``bench.checkpoints.load_edm``, the name architecture.md fixes, now living in bench.models."""
from bench.models.checkpoints import load_cm, load_edm

__all__ = ["load_cm", "load_edm"]
