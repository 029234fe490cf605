"""Progress lines for logs: what ``python -m bench.run`` prints when stderr is not a terminal.

A terminal gets tqdm bars; a log file (CI, nohup, a batch system) gets one plain line per
finished cell and one line when a PAS teacher solve or a PAS fit starts and ends, each
flushed at once. Plain ``print`` to stderr rather than ``logging``: the lines are the runner's
user interface, not diagnostics, and must appear without the caller configuring handlers.
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Any, TextIO

PREFIX = "bench.run:"


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class ProgressLog:
    """Writes the progress lines of a run when ``enabled``; ``start`` begins counting cells."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start(0)

    def start(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def _say(self, text: str) -> None:
        if self.enabled:
            print(f"{PREFIX} {text}", file=self.stream, flush=True)

    def teacher_started(self, dataset: str, fits: int) -> None:
        self._say(f"PAS teacher for {dataset}: started (one solve for {fits} fit(s))")

    def teacher_finished(self, dataset: str, teacher: Any) -> None:
        how = "found in the cache" if teacher.cached else f"solved in {teacher.seconds:.1f} s"
        self._say(f"PAS teacher for {dataset}: {how} ({len(teacher.grid) - 1} Heun steps, "
                  f"{teacher.count} seeds)")

    def fit_started(self, label: str) -> None:
        self._say(f"PAS fit {label}: started (the search, then the held-out gate)")

    def fit_finished(self, label: str, artifact: Any, seconds: float) -> None:
        teacher = "cached" if artifact.teacher.get("cached") else f"{artifact.teacher_seconds:.1f} s"
        self._say(f"PAS fit {label}: done in {seconds:.1f} s (teacher {teacher}, "
                  f"{artifact.n_params} coordinates)")

    def gits_finished(self, label: str, artifact: Any) -> None:
        teacher = ("cached" if artifact.teacher.get("cached")
                   else f"{artifact.teacher['generation_seconds']:.1f} s")
        self._say(f"GITS search {label}: done in {artifact.search_seconds:.1f} s (teacher "
                  f"{teacher}, {artifact.warmup} warm-up seeds, steps at fine-grid points "
                  f"{artifact.indices})")

    def amed_finished(self, label: str, artifact: Any) -> None:
        teacher = ("cached" if artifact.teacher.get("cached")
                   else f"{artifact.teacher['generation_seconds']:.1f} s")
        self._say(f"AMED fit {label}: done in {artifact.fit_seconds:.1f} s (teacher {teacher}, "
                  f"{artifact.training['trajectories']} trajectories, {artifact.num_steps} steps)")

    def cell_finished(self, row: dict, seconds: float) -> None:
        """One line for a finished cell; the time left assumes the remaining cells take as long
        on average as the finished ones (PAS fits included)."""
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        label = f"{row['dataset']} {row['solver']} nfe={row['nfe']} {row['method']}"
        suspect = f" [timing suspect: {row['timing_suspect_reason']}]" if row["timing_suspect"] else ""
        self._say(f"[{self.done}/{self.total}] {label}: {row['metric']} {row['value']:.6g}, "
                  f"{seconds:.1f} s{suspect}; about {_clock(left)} left")
