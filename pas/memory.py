"""Memory of a PAS fit: what it will take (a model of pas.stream's buffers) and what it took.

``fit_memory`` states the peak a fit's own tensors reach, from its sizes: the trajectories are
streamed in chunks (pas.stream), so the peak is a chunk's working set plus O(S) small values,
never S x D. ``PeakMemory`` measures a fit: CUDA's peak allocated bytes on a CUDA device, and on
every device the peak of the host's anonymous resident memory (``RssAnon``, sampled by a thread;
file pages of the memory-mapped scratch and teacher files are not counted, they are reclaimable).
tests/test_pas_memory.py checks the model against the measurement on the CPU.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any, Self

import torch

# How often PeakMemory samples RssAnon (seconds).
SAMPLE_INTERVAL = 0.005
_STATUS = Path("/proc/self/status")


def rss_anon() -> int | None:
    """This process's anonymous resident memory in bytes (Linux), else None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory over a ``with`` block: ``record()`` after it gives the figures (bytes)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.start = self.peak = rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._update()

    def _update(self) -> None:
        now = rss_anon()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.start is not None:
            self._stop.set()
            self._thread.join()
            self._update()

    def record(self) -> dict[str, Any]:
        """``host_rss_anon_peak`` / ``host_rss_anon_start``: the process's RssAnon at its peak
        during the block and before it (None off Linux); ``device_peak``: CUDA's peak allocated
        bytes during the block (None on other devices)."""
        device_peak = (torch.cuda.max_memory_allocated(self.device)
                       if self.device.type == "cuda" else None)
        return {"device": self.device.type, "device_peak": device_peak,
                "host_rss_anon_peak": self.peak, "host_rss_anon_start": self.start}


def default_chunk(shape: tuple[int, ...], steps: int, k: int, dtype: torch.dtype,
                  device: torch.device | str) -> int:
    """Trajectories per chunk whose working set takes about a quarter of a CUDA device's memory,
    or a sixteenth of the host's (the rest is left to the network, the teacher's reads and other
    work)."""
    device = torch.device(device)
    if device.type == "cuda":
        budget = torch.cuda.get_device_properties(device).total_memory // 4
    else:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 16
    per_trajectory = chunk_bytes(shape, steps, k, torch.empty(0, dtype=dtype).element_size())
    return max(1, budget // per_trajectory)


def chunk_bytes(shape: tuple[int, ...], steps: int, k: int, item: int) -> int:
    """Bytes one trajectory of a chunk adds to a fit's peak."""
    dim = math.prod(shape)
    return dim * (item * (steps + k + 8) + 8 * (steps + 2))
