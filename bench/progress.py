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
from collections.abc import Collection, Sequence
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

    def start(self, total: int, costs: Sequence[tuple[str, float]] | None = None,
              timed: Collection[str] = ()) -> None:
        """Begin counting ``total`` cells; ``costs`` holds each cell's (dataset, planned cost) in
        run order (bench.plan.cell_costs), None when all cells count alike; the datasets in
        ``timed`` have costs in estimated seconds."""
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.costs = list(costs) if costs is not None else [("", 1.0)] * total
        self.timed = set(timed)
        self.last = self.started
        # Per dataset: seconds its finished cells took, and what they were planned to cost.
        self.spent: dict[str, float] = {}
        self.planned: dict[str, float] = {}

    def _rate(self, dataset: str) -> float:
        """Seconds per unit of planned cost of ``dataset``'s remaining cells: what its finished
        cells took. A dataset not begun takes its estimated seconds as they are, or, when its
        costs are no seconds, the rate of the finished cells of such datasets (of all finished
        cells when there are none)."""
        if self.planned.get(dataset, 0.0) > 0:
            return self.spent[dataset] / self.planned[dataset]
        if dataset in self.timed:
            return 1.0
        pool = [name for name in self.planned if name not in self.timed] or list(self.planned)
        planned = sum(self.planned[name] for name in pool)
        return sum(self.spent[name] for name in pool) / planned if planned > 0 else 0.0

    def time_left(self) -> float:
        """Seconds the cells not yet finished should take: each one's planned cost at its
        dataset's rate (``_rate``)."""
        return sum(cost * self._rate(dataset) for dataset, cost in self.costs[self.done:])

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
        """One line for a finished cell, with the time left (``time_left``; the time since the
        previous cell counts for this one, PAS fits included)."""
        now = time.perf_counter()
        dataset, cost = self.costs[self.done]
        self.spent[dataset] = self.spent.get(dataset, 0.0) + now - self.last
        self.planned[dataset] = self.planned.get(dataset, 0.0) + cost
        self.last = now
        self.done += 1
        left = self.time_left()
        label = f"{row['dataset']} {row['solver']} nfe={row['nfe']} {row['method']}"
        suspect = f" [timing suspect: {row['timing_suspect_reason']}]" if row["timing_suspect"] else ""
        self._say(f"[{self.done}/{self.total}] {label}: {row['metric']} {row['value']:.6g}, "
                  f"{seconds:.1f} s{suspect}; about {_clock(left)} left")
