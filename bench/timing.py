"""Wall-clock of a cell's sampling batches, and whether the machine let it be trusted.

A cell with several batches samples its first batch as an untimed warm-up (first-call costs:
allocator growth, kernel selection, CUDA context); its samples still count towards the metric. A
cell with a single batch has nothing left to time after a warm-up, so it times that batch and
says so (``warmup_s`` is null). Only the solver call is timed, never drawing latents or the metric.

Besides the total, the row keeps the median, minimum and maximum of the per-batch seconds per
sample, the standard error of ``s_per_sample`` from their spread (``s_per_sample_se``: the sample
standard deviation of the per-batch seconds per sample over sqrt(batches); null with fewer than
two timed batches), the process CPU seconds over the timed batches (every thread of the process),
torch's thread count, the core count and the 1-minute load average before and after the cell.
The standard error measures the noise within one run; drift between runs (another machine,
another load) is not in it, which is what ``timing_suspect`` and the compare tolerance are for.

The rule (``TimingRule``; defaults below) marks a row ``timing_suspect`` when

- the load average, before or after the cell, exceeded the core count by more than
  ``load_margin`` = 0.25: more threads wanted to run than there were cores, so the cell shared
  them (a 1-minute mean: it catches contention that lasted, and lags behind a burst). The load
  counts the run's own threads, which keep it at the core count when they use every core; without
  the margin a shell command beside such a run (load 2.01-2.05 on 2 cores, ``others_cpu``
  0.00-0.01) marked 15 of the toy grid's 120 rows;
- on the CPU, CPU seconds / wall seconds fell below ``min_cpu_share`` = 0.5. A sampling process
  always has work for at least one thread, whatever its thread count (small tensors run on one),
  so a ratio below one half means it waited for a core at least half of the time;
- on the CPU, other processes used more than the cores the cell's threads left free, plus
  ``others_margin`` = 0.25 of a core (``others_cpu``: the machine's busy CPU seconds from
  /proc/stat minus this process's, per wall second over the timed batches; Linux only, and only
  over at least ``MIN_SPAN_S`` so the 10 ms tick does not matter). This is the case the first two
  miss: torch's OpenMP threads wait for each other at every parallel region, so two threads on two
  cores, one of them shared, ran 3-5 times slower than one thread on this project's 2-core
  machine while the CPU share stayed at 1.0 and the load average below 2. Shorter cells are not
  checked by this part (their absolute error is small).

On a GPU the host thread waits for the device, so only the load average applies there.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# The row fields this module fills, in row order (bench.results.ROW_KEYS includes them).
TIMING_KEYS = (
    "warmup_s", "timed_samples", "s_per_sample_median", "s_per_sample_min", "s_per_sample_max",
    "s_per_sample_se", "cpu_s", "others_cpu", "torch_threads", "cpu_count", "load_before",
    "load_after",
    "timing_suspect", "timing_suspect_reason",
)
# Shortest span of timed batches over which other processes' CPU use is measured.
MIN_SPAN_S = 1.0
PROC_STAT = "/proc/stat"


@dataclass(frozen=True)
class TimingRule:
    """When a cell's time is not to be trusted; see the module docstring for the why."""

    max_load_per_core: float = 1.0
    load_margin: float = 0.25
    min_cpu_share: float = 0.5
    others_margin: float = 0.25

    def reasons(self, timing: dict, device_type: str) -> list[str]:
        """Why the timing fields of a row are suspect (empty when they are not)."""
        found = []
        loads = [v for v in (timing["load_before"], timing["load_after"]) if v is not None]
        limit = self.max_load_per_core * timing["cpu_count"] + self.load_margin
        if loads and max(loads) > limit:
            found.append(f"load average {max(loads):.2f} > {limit:g} (cores + margin)")
        if device_type != "cpu":
            return found
        threads, cores = timing["torch_threads"], timing["cpu_count"]
        if timing["sample_s"] > 0:
            share = timing["cpu_s"] / timing["sample_s"]
            if share < self.min_cpu_share:
                found.append(f"CPU s / wall s = {share:.2f} < {self.min_cpu_share:g} "
                             f"with {threads} thread(s)")
        others, free = timing["others_cpu"], cores - min(threads, cores)
        if others is not None and others > free + self.others_margin:
            found.append(f"other processes used {others:.2f} cores; {threads} thread(s) "
                         f"left {free} of {cores} free")
        return found


DEFAULT_RULE = TimingRule()


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_busy_s() -> float | None:
    """CPU seconds every process of the machine has used since boot (None without /proc/stat)."""
    try:
        with open(PROC_STAT) as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class BatchClock:
    """Times the batches of one cell (on one rank); ``batch`` wraps each solver call."""

    def __init__(self, batches: int, sync: Callable[[], None]) -> None:
        self.warmup_pending = batches > 1
        self.sync = sync
        self.warmup_s: float | None = None
        self.timed: list[tuple[float, int]] = []  # (seconds, samples) per timed batch
        self.cpu_s = 0.0
        self.load_before = load_average()
        # (machine busy s, process CPU s, wall s) when the first timed batch began and the last ended
        self.span: list[tuple[float | None, float, float]] = []

    @staticmethod
    def _mark() -> tuple[float | None, float, float]:
        return machine_busy_s(), time.process_time(), time.perf_counter()

    @contextmanager
    def batch(self, samples: int) -> Iterator[None]:
        start = self._mark()
        yield
        self.sync()
        end = self._mark()
        seconds, cpu_s = end[2] - start[2], end[1] - start[1]
        if self.warmup_pending:
            self.warmup_pending, self.warmup_s = False, seconds
        else:
            self.timed.append((seconds, samples))
            self.cpu_s += cpu_s
            self.span = [self.span[0] if self.span else start, end]

    def others_cpu(self) -> float | None:
        """Cores' worth of CPU other processes used from the first timed batch to the last."""
        if not self.span or self.span[0][0] is None or self.span[1][0] is None:
            return None
        (busy0, cpu0, wall0), (busy1, cpu1, wall1) = self.span
        if wall1 - wall0 < MIN_SPAN_S:
            return None
        return max(0.0, (busy1 - busy0 - (cpu1 - cpu0)) / (wall1 - wall0))

    @property
    def sample_s(self) -> float:
        return sum(seconds for seconds, _ in self.timed)

    def fields(self, rule: TimingRule, device_type: str) -> dict:
        """The row's timing fields (``TIMING_KEYS`` plus ``sample_s`` and ``s_per_sample``)."""
        # A rank without seeds times nothing; rank 0, whose fields the row keeps, always has some.
        per_sample = [seconds / count for seconds, count in self.timed] or [math.nan]
        count = sum(n for _, n in self.timed)
        fields = {
            "sample_s": self.sample_s, "s_per_sample": self.sample_s / count if count else math.nan,
            "warmup_s": self.warmup_s, "timed_samples": count,
            "s_per_sample_median": statistics.median(per_sample),
            "s_per_sample_min": min(per_sample), "s_per_sample_max": max(per_sample),
            "s_per_sample_se": (statistics.stdev(per_sample) / math.sqrt(len(per_sample))
                                if len(per_sample) > 1 else None),
            "cpu_s": self.cpu_s, "others_cpu": self.others_cpu(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count() or 1, "load_before": self.load_before,
            "load_after": load_average(),
        }
        reasons = rule.reasons(fields, device_type)
        return {**fields, "timing_suspect": bool(reasons),
                "timing_suspect_reason": "; ".join(reasons) or None}
