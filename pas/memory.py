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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch

from pas.search import NEAR_CAP, NEAR_FRACTION, SUBSAMPLE
from pas.stream import scratch_layout

# The working set of a chunk on the CPU (see default_chunk).
CPU_CHUNK_BYTES = 1 << 30
# What the first fit of a process adds on the host whatever its size (measured ~20 MiB: scipy's
# linear-programme solver is loaded, torch sets up its CPU kernels' workspaces).
FIRST_FIT_BYTES = 20 << 20
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


def _search_bytes(steps: int, k: int, item: int) -> int:
    """Bytes per trajectory and dimension at the search's peak: the basis tracker's float64 rows
    [x_T, used..., d, x - x_T] and its k vectors, plus what one pass of the L1 fit holds for a
    chunk (residuals, the whitened design, ratios, masks: about 2k + 7 tensors of the working
    dtype). The 3k + 7 was calibrated on CPU fits at 3x32x32 and 3x64x64 (NFE 4 and 10, chunks
    of 32 to 512), and a fit at 3x256x256 in chunks of 8 came within 5% of the model;
    tests/test_pas_memory.py checks two sizes."""
    return 8 * (steps + 2) + item * (3 * k + 7)


def _gate_bytes(steps: int, k: int, item: int) -> int:
    """Bytes per held-out trajectory and dimension while the gate samples a chunk: the sampler
    keeps every direction used (N), the correction's tracker its float64 rows and k vectors, and
    a few states and temporaries besides."""
    return 8 * (steps + 2) + item * (steps + k + 6)


@dataclass(frozen=True)
class FitMemory:
    """A fit's peak memory in bytes: on its device, and on the host (on the CPU, the device's
    figure plus FIRST_FIT_BYTES); and the scratch file it keeps on disk.

    Counts PAS's own tensors, not the network's weights and activations, nor file pages of the
    memory-mapped scratch and teacher files (reclaimable page cache)."""

    device: int
    host: int
    scratch: int  # bytes of the scratch file on the cache's disk (pas.stream)


def fit_memory(shape: tuple[int, ...], trajectories: int, held_out: int, steps: int, k: int,
               item: int, chunk: int, device_type: str, history: int = 0) -> FitMemory:
    """The peak memory of a fit of ``trajectories`` (+ ``held_out`` for the gate) on data of
    ``shape``, ``steps`` student steps, basis size ``k``, ``item`` bytes per value, in chunks of
    ``chunk`` trajectories, on a device of type ``device_type`` ("cpu", "cuda"), for a solver
    that keeps ``history`` tensors between steps (its order; 0 for ddim)."""
    dim = math.prod(shape)
    scratch = sum(scratch_layout(steps, k, history).values()) * trajectories * dim * item
    search = min(chunk, trajectories) * dim * _search_bytes(steps, k, item)
    gate = min(chunk, held_out) * dim * _gate_bytes(steps, k, item)
    # Capped and O(S) parts: the L1 close set (design, residuals, ratios), the rough fit's
    # stride through the residuals, each trajectory's Gram matrix of its buffer rows.
    near = min(int(NEAR_FRACTION * trajectories * dim), NEAR_CAP)
    small = (2 * near * (k + 2) * item + 2 * SUBSAMPLE * (k + 1) * item
             + trajectories * (steps + 1) ** 2 * 8)
    device = max(search, gate) + small
    if device_type == "cpu":
        return FitMemory(device, device + FIRST_FIT_BYTES, scratch)
    # On an accelerator the host holds a chunk's float64 latents and teacher states on their
    # way to the device (scratch reads and writes go to file pages).
    host = min(chunk, trajectories) * dim * (8 + item) + FIRST_FIT_BYTES
    return FitMemory(device, host, scratch)


def default_chunk(shape: tuple[int, ...], steps: int, k: int, dtype: torch.dtype,
                  device: torch.device | str) -> int:
    """Trajectories per chunk: on a CUDA device as many as take a quarter of its memory (the rest
    is left to the network); on the CPU as many as take CPU_CHUNK_BYTES. Fewer chunks cost less:
    between steps each chunk's buffer rows are read back from the scratch, except in a fit of
    one chunk (on digits32 with 1,000 trajectories, one chunk took 8% longer than the fit held
    in memory before streaming, chunks of 62 16%)."""
    device = torch.device(device)
    if device.type == "cuda":
        budget = torch.cuda.get_device_properties(device).total_memory // 4
    else:
        budget = CPU_CHUNK_BYTES
    item = torch.empty(0, dtype=dtype).element_size()
    per_trajectory = math.prod(shape) * max(_search_bytes(steps, k, item),
                                            _gate_bytes(steps, k, item))
    return max(1, budget // per_trajectory)
