"""The on-disk cache shared by PAS (teacher trajectories) and bench (artifacts, downloads)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def default_cache_dir() -> Path:
    """``$PASBENCH_CACHE``, else ``$XDG_CACHE_HOME/pasbench``, else ``~/.cache/pasbench``."""
    explicit = os.environ.get("PASBENCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pasbench"


def config_hash(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-serialisable configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader therefore sees either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` with an atomic rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: str | os.PathLike) -> Any | None:
    """``torch.load`` of a cache entry, or None when it is missing or unreadable (then rebuilt)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
