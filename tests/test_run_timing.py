"""Timing fields of a row: the warm-up batch, the suspect rule, a real busy machine, and the
progress lines a log gets."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from run_helpers import read_rows, run_cli, write_grid

from bench import timing
from bench.run import main
from bench.timing import DEFAULT_RULE, TimingRule

# One base cell with real work: 6 batches of 1000 digits samples, the 5 timed ones taking over
# a second (bench.timing.MIN_SPAN_S) on one thread.
TIMED_CELL = ["--datasets", "digits", "--solvers", "ddim", "--nfe", "10", "--pas", "off",
              "--num-samples", "6000", "--batch-size", "1000"]
SPIN = """import sys, time
end = time.monotonic() + float(sys.argv[1])
print("spinning", flush=True)
while time.monotonic() < end:
    pass
"""
CORES = os.cpu_count() or 1


def fields(**changes: object) -> dict:
    """Timing fields of a quiet one-thread CPU cell on 2 cores, with ``changes``."""
    return {"load_before": 0.5, "load_after": 1.0, "cpu_count": 2, "sample_s": 2.0, "cpu_s": 1.9,
            "others_cpu": 0.1, "torch_threads": 1, **changes}


def test_rule_flags_load_above_the_cores_a_small_cpu_share_or_busy_neighbours():
    assert DEFAULT_RULE.reasons(fields(), "cpu") == []
    assert DEFAULT_RULE.reasons(fields(load_after=2.25, cpu_s=1.0), "cpu") == []  # at the limits
    assert DEFAULT_RULE.reasons(fields(load_before=2.3), "cpu") == [
        "load average 2.30 > 2.25 (cores + margin)"]
    assert DEFAULT_RULE.reasons(fields(cpu_s=0.6), "cpu") == [
        "CPU s / wall s = 0.30 < 0.5 with 1 thread(s)"]
    assert len(DEFAULT_RULE.reasons(fields(load_after=3.0, cpu_s=0.6), "cpu")) == 2
    # One thread leaves one of two cores free: a neighbour may use it, plus a quarter core.
    assert DEFAULT_RULE.reasons(fields(others_cpu=1.25), "cpu") == []
    assert DEFAULT_RULE.reasons(fields(others_cpu=1.3), "cpu") == [
        "other processes used 1.30 cores; 1 thread(s) left 1 of 2 free"]
    assert DEFAULT_RULE.reasons(fields(others_cpu=0.3, torch_threads=2, cpu_s=3.8), "cpu") == [
        "other processes used 0.30 cores; 2 thread(s) left 0 of 2 free"]
    # On a GPU the host waits for the device: CPU share and neighbours say nothing.
    assert DEFAULT_RULE.reasons(fields(cpu_s=0.01, others_cpu=1.9), "cuda") == []
    # No load average or /proc/stat on this platform (or too short a cell): the rest decides.
    assert DEFAULT_RULE.reasons(fields(load_before=None, load_after=None, others_cpu=None),
                                "cpu") == []
    assert TimingRule(max_load_per_core=2.0).reasons(fields(load_before=4.25), "cpu") == []
    assert TimingRule(load_margin=0.0).reasons(fields(load_before=2.05), "cpu") == [
        "load average 2.05 > 2 (cores + margin)"]


def test_first_of_several_batches_is_an_untimed_warm_up(tmp_path):
    argv = ["--grid", str(write_grid(tmp_path)), "--datasets", "gmm2d", "--solvers", "ddim",
            "--pas", "off", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "four"), "--num-samples", "40", "--batch-size", "10"]) == 0
    (row,) = read_rows(tmp_path / "four")
    assert row["warmup_s"] > 0 and row["timed_samples"] == 30
    assert row["s_per_sample"] == pytest.approx(row["sample_s"] / 30, rel=1e-12)
    assert row["s_per_sample_min"] <= row["s_per_sample_median"] <= row["s_per_sample_max"]
    # Three timed batches: their standard deviation is at most range / sqrt(3) (values 0, 0, R),
    # so the SE of their mean at most range / 3, and zero only if the range is.
    spread = row["s_per_sample_max"] - row["s_per_sample_min"]
    assert row["s_per_sample_se"] <= spread / 3 * (1 + 1e-12)
    assert (row["s_per_sample_se"] > 0) == (spread > 0)
    assert row["torch_threads"] == torch.get_num_threads() and row["cpu_count"] == CORES
    # A single batch: nothing would be left to time after a warm-up, so there is none.
    assert main([*argv, str(tmp_path / "one"), "--num-samples", "40", "--batch-size", "64"]) == 0
    (row,) = read_rows(tmp_path / "one")
    assert row["warmup_s"] is None and row["timed_samples"] == 40
    assert row["s_per_sample_se"] is None


@contextmanager
def busy_loops(count: int, seconds: float) -> Iterator[None]:
    """``count`` processes spinning on the CPU for at most ``seconds``, stopped on exit."""
    loops: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            loops.append(subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)],
                                          stdout=subprocess.PIPE, text=True))
        for loop in loops:
            loop.stdout.readline()  # it is spinning
        yield
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()
            loop.stdout.close()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The cell runs in this process on one thread, whatever the suite's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_timed_cell(tmp_path: Path, name: str) -> dict:
    grid = write_grid(tmp_path)
    assert main(["--grid", str(grid), *TIMED_CELL, "--out", str(tmp_path / name), "--quiet"]) == 0
    (row,) = read_rows(tmp_path / name)
    return row


@contextmanager
def on_one_core() -> Iterator[None]:
    """This process, and the processes it starts meanwhile, run on one core only."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins processes to one core")
def test_cell_on_an_oversubscribed_machine_is_suspect(tmp_path, one_thread):
    """The cell and four spinning processes share one core: the cell gets about a fifth of it,
    on a machine of any size. The shipped rule decides, unchanged."""
    assert timing.DEFAULT_RULE == TimingRule()
    with on_one_core(), busy_loops(4, seconds=30):
        row = run_timed_cell(tmp_path, "busy")
    assert row["timing_suspect"] is True and row["timing_suspect_reason"]
    assert row["cpu_s"] / row["sample_s"] < 0.5 or row["load_after"] > CORES


def test_cell_alone_is_not_suspect(tmp_path, one_thread, monkeypatch):
    """The same cell with a core to itself: a CPU share near 1, so not suspect.

    The load-average part of the rule is left out here: it remembers the last minute (earlier
    tests, other users of a shared machine), so it cannot be held still; the unit test above and
    the busy loop cover it. When other processes used more than the core the cell left free (plus
    the rule's margin; the row's ``others_cpu``), the cell was not alone: the check is skipped with
    the figure. Otherwise at least three quarters of a core were free for the cell's one thread.
    """
    monkeypatch.setattr(timing, "DEFAULT_RULE", TimingRule(max_load_per_core=math.inf))
    row = run_timed_cell(tmp_path, "alone")
    others = row["others_cpu"]
    if others is None:
        pytest.skip("other processes' CPU use is measured from /proc/stat (Linux)")
    if others > CORES - 1 + DEFAULT_RULE.others_margin:
        pytest.skip(f"other processes used {others:.2f} of {CORES} cores during the cell "
                    f"(its CPU share: {row['cpu_s'] / row['sample_s']:.2f})")
    assert row["timing_suspect"] is False, row["timing_suspect_reason"]
    assert row["cpu_s"] / row["sample_s"] >= 0.5


CELL_LINE = re.compile(r"bench\.run: \[(\d)/2\] gmm2d ddim nfe=4 (base|pas): fd \d\S*, \d+\.\d s"
                       r"( \[timing suspect: .+\])?; about \d+:\d\d:\d\d left")


def test_log_lines_when_stderr_is_a_file_and_none_with_quiet(tmp_path):
    common = ["--grid", str(write_grid(tmp_path)), "--datasets", "gmm2d", "--solvers", "ddim",
              "--cache-dir", str(tmp_path / "cache")]
    log = tmp_path / "stderr.log"
    done = run_cli(*common, "--out", str(tmp_path / "out"), stderr_file=log)
    assert done.returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 6, lines
    assert re.fullmatch(r"bench\.run: PAS fit gmm2d ddim nfe=4: started .*", lines[1])
    assert lines[2] == "bench.run: PAS teacher for gmm2d: started (one solve for 1 fit(s))"
    assert re.fullmatch(r"bench\.run: PAS teacher for gmm2d: solved in \d+\.\d s "
                        r"\(\d+ Heun steps, \d+ seeds\)", lines[3])
    # The fit then reads the teacher just solved.
    assert re.fullmatch(r"bench\.run: PAS fit gmm2d ddim nfe=4: done in \d+\.\d s "
                        r"\(teacher cached, \d+ coordinates\)", lines[4])
    cells = [CELL_LINE.fullmatch(lines[i]) for i in (0, 5)]
    assert [(m[1], m[2]) for m in cells] == [("1", "base"), ("2", "pas")], lines

    quiet = run_cli(*common, "--out", str(tmp_path / "quiet"), "--quiet", "--force",
                    stderr_file=log)
    assert quiet.returncode == 0 and log.read_text() == ""
    assert len(read_rows(tmp_path / "quiet")) == 2
