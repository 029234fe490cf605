"""Read stored benchmark rows (``results/runs/*.jsonl``) into pandas, newest row per cell.

The report only reads what the runner stored; it never imports bench, pas or solvers.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_STORE = Path("results/runs")
SUSPECT_MARK = "\u2020"  # dagger beside times the runner flagged timing_suspect (busy machine)


class ReportInputError(ValueError):
    """Input the report cannot use (missing path, unreadable file, no rows)."""


def run_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into the list of ``*.jsonl`` run files they name, sorted per folder."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise ReportInputError(f"no such file or folder: {path}")
    return files


def read_run_file(path: Path) -> pd.DataFrame:
    """One run file as a DataFrame; ``source_dir`` records its folder (previews are relative to it)."""
    try:
        # dtype=False: keep strings such as git_sha "1234567" or seeds "0-9999" as written.
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as err:
        raise ReportInputError(f"{path}: not JSON lines ({err})") from None
    frame["source_dir"] = str(path.resolve().parent)
    return frame


def load_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the run files under ``paths``, with ``created_at`` parsed as UTC timestamps."""
    paths = list(paths)
    frames = [frame for frame in map(read_run_file, run_files(paths)) if not frame.empty]
    if not frames:
        raise ReportInputError("no result rows (*.jsonl) found in " + ", ".join(map(str, paths)))
    rows = pd.concat(frames, ignore_index=True)
    missing = {"config_hash", "created_at", "dataset", "solver", "nfe", "pas", "metric", "value"} - set(rows)
    if missing:
        raise ReportInputError(f"rows lack the fields {sorted(missing)}")
    rows["created_at"] = pd.to_datetime(rows["created_at"], utc=True)
    rows["pas"] = rows["pas"].astype(bool)
    # Rows written before the runner judged its timings have no flag: they count as not suspect.
    rows["timing_suspect"] = rows.get("timing_suspect", pd.Series(False, index=rows.index)).eq(True)
    return rows


def latest_per_cell(rows: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest row (by ``created_at``) of every cell; a cell is one ``config_hash``."""
    ordered = rows.sort_values("created_at", kind="stable")
    return ordered.drop_duplicates("config_hash", keep="last").reset_index(drop=True)


def load_preview(row: pd.Series) -> dict[str, np.ndarray] | None:
    """The arrays of a row's preview ``.npz`` (path relative to its run file), or None if absent."""
    preview = row.get("preview")
    if not isinstance(preview, str) or not preview:
        return None
    path = Path(row["source_dir"]) / preview
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
