"""Wall-clock of a cell's sampling batches, and whether the machine let it be trusted.

A cell with several batches samples its first batch as an untimed warm-up (first-call costs:
allocator growth, kernel selection, CUDA context); its samples still count towards the metric. A
cell with a single batch has nothing left to time after a warm-up, so it times that batch and
says so (``warmup_s`` is null). Only the solver call is timed, never drawing latents or the metric.

Besides the total, the row keeps the median, minimum and maximum of the per-batch seconds per
sample, the process CPU seconds over the timed batches (every thread of the process), torch's
thread count, the core count and the 1-minute load average before and after the cell.

The rule (``TimingRule``; defaults below) marks a row ``timing_suspect`` when

- the load average, before or after the cell, exceeded the core count: more threads wanted to
  run than there were cores, so the cell shared them (the load average is a 1-minute mean, so
  this catches contention that lasted, including a long cell's own threads beyond the cores), or
- on the CPU, CPU seconds / wall seconds fell below ``min_cpu_share`` = 0.5. A sampling process
  always has work for at least one thread, whatever its thread count (small tensors run on one),
  so a ratio below one half means it waited for a core at least half of the time. This reacts
  within a cell, where the load average lags. On a GPU the host thread waits for the device, so
  the ratio says nothing there and only the load part applies.

Contention that this misses (a short burst while the load average is still low, two processes
that each keep one core busy) leaves the time too high by less than a factor of two.
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
    "cpu_s", "torch_threads", "cpu_count", "load_before", "load_after", "timing_suspect",
    "timing_suspect_reason",
)


@dataclass(frozen=True)
class TimingRule:
    """When a cell's time is not to be trusted; see the module docstring for the why."""

    max_load_per_core: float = 1.0
    min_cpu_share: float = 0.5

    def reasons(self, timing: dict, device_type: str) -> list[str]:
        """Why the timing fields of a row are suspect (empty when they are not)."""
        found = []
        loads = [v for v in (timing["load_before"], timing["load_after"]) if v is not None]
        limit = self.max_load_per_core * timing["cpu_count"]
        if loads and max(loads) > limit:
            found.append(f"load average {max(loads):.2f} > {limit:g} (cores)")
        if device_type == "cpu" and timing["sample_s"] > 0:
            share = timing["cpu_s"] / timing["sample_s"]
            if share < self.min_cpu_share:
                found.append(f"CPU s / wall s = {share:.2f} < {self.min_cpu_share:g} "
                             f"with {timing['torch_threads']} thread(s)")
        return found


DEFAULT_RULE = TimingRule()


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class BatchClock:
    """Times the batches of one cell (on one rank); ``batch`` wraps each solver call."""

    def __init__(self, batches: int, sync: Callable[[], None]) -> None:
        self.warmup_pending = batches > 1
        self.sync = sync
        self.warmup_s: float | None = None
        self.timed: list[tuple[float, int]] = []  # (seconds, samples) per timed batch
        self.cpu_s = 0.0
        self.load_before = load_average()

    @contextmanager
    def batch(self, samples: int) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        self.sync()
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        if self.warmup_pending:
            self.warmup_pending, self.warmup_s = False, seconds
        else:
            self.timed.append((seconds, samples))
            self.cpu_s += cpu_s

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
            "cpu_s": self.cpu_s, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count() or 1, "load_before": self.load_before,
            "load_after": load_average(),
        }
        reasons = rule.reasons(fields, device_type)
        return {**fields, "timing_suspect": bool(reasons),
                "timing_suspect_reason": "; ".join(reasons) or None}
