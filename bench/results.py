"""The results store: one JSONL file per run, one row per grid cell, written atomically.

A run writes ``<out>/<run_id>.jsonl`` and its cell previews under ``<out>/<run_id>.previews/``.
Every write goes to a temporary file in the same folder, is fsync'ed and then renamed over the
target, so a crash or Ctrl-C at any moment leaves either the old file or the new one: never a
partial line. Because rows are keyed by ``config_hash``, a rerun can skip the cells any run in the
same folder has already finished.
"""
from __future__ import annotations

import io
import json
import os
import platform
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.errors import UserError
from bench.timing import TIMING_KEYS

# The row schema (architecture.md, Results store); the report and bench.compare read these keys.
ROW_KEYS = (
    "run_id", "created_at", "git_sha", "git_dirty", "host", "device", "torch_version",
    "package_version", "grid", "dataset", "solver", "nfe", "schedule", "order", "options", "pas",
    "pas_params", "pas_steps", "pas_fit_s", "teacher_s", "pas_holdout_gain", "pas_peak_mem_mb",
    "pas_settings",
    "num_samples", "seeds",
    "batch_size", "world_size", "dtype", "precision", "metric", "value", "rmse_to_teacher",
    "sample_s", "s_per_sample", *TIMING_KEYS, "metric_s", "peak_mem_mb", "preview", "config_hash",
    # Network calls per sample (unet_evals = 2 x nfe under guidance) and text-to-image fields.
    "unet_evals", "clip_score", "conditioning",
    # FID rows: how images were resized for Inception (bench.metrics.inception.RESIZES).
    "fid_resize",
    # Error bars: seed blocks, the metric without each block, jackknife SE (bench.metrics.frechet).
    "blocks", "value_blocks", "value_se",
    # The method axis (bench.methods): base, pas, gits, gits_pas; the settings and reports of its
    # fitters besides PAS (e.g. {"gits": {"times": ..., "search_s": ...}}). Older rows lack them.
    "method", "method_settings", "method_fit",
)
# Keys that describe when/where/how fast a row was produced rather than what it measured.
PROVENANCE_KEYS = (
    "run_id", "created_at", "git_sha", "git_dirty", "host", "device", "torch_version",
    "package_version", "batch_size", "world_size", "pas_fit_s", "teacher_s", "pas_peak_mem_mb",
    "sample_s",
    "s_per_sample", *TIMING_KEYS, "metric_s", "peak_mem_mb", "preview",
)
_REPO_ROOT = Path(__file__).resolve().parent.parent


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def provenance() -> dict:
    """The machine- and code-describing fields every row of this process shares."""
    try:
        version = metadata.version("pasbench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(status),
        "host": platform.node(),
        "torch_version": torch.__version__,
        "package_version": version,
    }


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, nothing else."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove we can write there; ``UserError`` otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to {folder}: {exc.strerror or exc}") from None


class RunFile:
    """The rows and previews of one run under ``out_dir``."""

    def __init__(self, out_dir: Path, run_id: str) -> None:
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.path = self.out_dir / f"{run_id}.jsonl"

    def preview_name(self, config_hash: str) -> str:
        """The preview's path relative to the run file's folder (the row's ``preview`` field)."""
        return f"{self.run_id}.previews/{config_hash}.npz"

    def save_preview(self, config_hash: str, arrays: dict[str, np.ndarray]) -> str:
        """Store a cell's preview arrays as ``.npz``; returns the relative name for the row."""
        name = self.preview_name(config_hash)
        target = self.out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        replace_atomically(target, buffer.getvalue())
        return name

    def append(self, row: dict) -> None:
        """Add one row; the file is rewritten whole and renamed into place."""
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"row lacks keys {missing}")
        line = json.dumps({key: row[key] for key in ROW_KEYS}, allow_nan=True) + "\n"
        old = self.path.read_bytes() if self.path.exists() else b""
        replace_atomically(self.path, old + line.encode())


def _row_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return files


def _read_lines(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not a JSON row ({exc.msg})") from None
    return rows


def existing_hashes(out_dir: Path) -> set[str]:
    """Config hashes of every row already stored in ``out_dir`` (any run)."""
    if not Path(out_dir).is_dir():
        return set()
    return {row["config_hash"] for path in _row_files([out_dir]) for row in _read_lines(path)
            if "config_hash" in row}


def load_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the given run files and/or store folders as one DataFrame.

    A ``source_file`` column names the file each row came from (previews are relative to its
    folder). Columns follow ``ROW_KEYS``; an empty store gives an empty frame with those columns.
    """
    records = []
    for path in _row_files(paths):
        records.extend({**row, "source_file": str(path)} for row in _read_lines(path))
    columns = [*ROW_KEYS, "source_file"]
    frame = pd.DataFrame.from_records(records)
    frame = frame.reindex(columns=[*columns, *[c for c in frame.columns if c not in columns]])
    # Rows written before the method axis existed: the pas flag says which method they are.
    methods = frame["pas"].map({True: "pas", False: "base"})
    frame["method"] = frame["method"].astype(object).fillna(methods)
    return frame


def read_store(paths: Sequence[Path]) -> pd.DataFrame:
    """``load_rows`` for the command lines that judge stored rows (compare, history), with their
    creation time as ``created``; a missing path, an unreadable file or no rows with a config
    hash is a UserError."""
    for path in paths:
        if not path.exists():
            raise UserError(f"no such file or folder: {path}")
    try:
        rows = load_rows(paths)
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {', '.join(map(str, paths))}: {err}") from None
    if rows.empty or rows["config_hash"].isna().any():
        raise UserError("no result rows (with a config_hash) in " + ", ".join(map(str, paths)))
    return rows.assign(created=pd.to_datetime(rows["created_at"], utc=True))
