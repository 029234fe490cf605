"""pytest-benchmark: a PAS fit's peak memory does not grow with its number of trajectories.

Fits on a cheap analytic mixture (4 random components, ddim NFE 2, a 2-step teacher), the
teacher solved and cached first, at 300 and at 2,400 trajectories: the larger fit's peak
anonymous resident memory (RssAnon, sampled during the fit by pas.memory.PeakMemory; the
memory-mapped scratch and teacher files are file pages, reclaimable, and not counted) stays
within 1.25x of the smaller's. The normal suite runs it at 3x32x32 with 30 and 240 trajectories;
``PAS_BENCH_FULL=1`` at 3x256x256 (LSUN Bedroom's size; it writes ~25 GB of teacher and scratch
files to the cache and takes minutes). The benchmark's time is the larger fit's.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

import pas
from pas.memory import rss_anon

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mixture import mixture

FULL = os.environ.get("PAS_BENCH_FULL") == "1"
SHAPE = (3, 256, 256) if FULL else (3, 32, 32)
TRAJECTORIES = (300, 2400) if FULL else (30, 240)


@pytest.fixture
def cache(tmp_path):
    """A cache folder removed after the test (the full size leaves ~25 GB in it)."""
    yield tmp_path / "cache"
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def _fit(trajectories: int, cache: Path) -> pas.PASArtifact:
    return pas.fit(mixture(SHAPE), "ddim", 2, trajectories=trajectories, teacher_nfe=4,
                   cache_dir=cache, progress=False, batch_size=32)


@pytest.mark.skipif(rss_anon() is None, reason="RssAnon is read from /proc/self/status (Linux)")
def test_fit_memory_does_not_grow_with_trajectories(benchmark, cache):
    small = _fit(TRAJECTORIES[0], cache)
    large = benchmark.pedantic(_fit, args=(TRAJECTORIES[1], cache), rounds=1, iterations=1)
    peaks = [art.memory["host_rss_anon_peak"] for art in (small, large)]
    grown = [art.memory["host_rss_anon_peak"] - art.memory["host_rss_anon_start"]
             for art in (small, large)]
    benchmark.extra_info.update(peak_mib=[p / 2**20 for p in peaks],
                                fit_mib=[g / 2**20 for g in grown], chunk=large.chunk)
    assert large.teacher["trajectories"] == TRAJECTORIES[1]
    assert peaks[1] <= 1.25 * peaks[0], [p / 2**20 for p in peaks]
