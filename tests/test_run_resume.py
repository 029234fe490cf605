"""An interrupted run leaves only complete rows; rerunning completes exactly the missing cells."""
from __future__ import annotations

import pytest
from run_helpers import assert_same_numbers, by_hash, read_rows, run_cli, write_grid

from bench.run import FAULT_ENV, main


@pytest.mark.invariance
def test_interrupted_run_resumes_to_the_same_rows(tmp_path, capsys):
    grid = write_grid(tmp_path)
    cache = tmp_path / "cache"
    common = ["--grid", str(grid), "--cache-dir", str(cache), "--quiet"]

    whole = tmp_path / "whole"
    assert main([*common, "--out", str(whole)]) == 0
    expected = by_hash(read_rows(whole))
    assert len(expected) == 8

    # A real process gets SIGINT in the middle of the third cell (after its first batch).
    broken = tmp_path / "broken"
    first = run_cli(*common, "--out", str(broken), env={FAULT_ENV: "2"})
    assert first.returncode == 130
    assert first.stderr.strip().splitlines() == [
        "bench.run: interrupted; finished cells are stored, rerun the same command to complete the rest"]
    partial = read_rows(broken)  # read_rows asserts there is no partial line
    assert len(partial) == 2
    assert not [p for p in broken.rglob("*") if p.name.endswith(".tmp")]

    assert main([*common, "--out", str(broken)]) == 0
    assert "2 cell(s) skipped" in capsys.readouterr().out
    resumed = read_rows(broken)
    assert len(resumed) == 8 and len(list(broken.glob("*.jsonl"))) == 2
    # The first two rows come from a single-thread subprocess, the rest from this process.
    assert_same_numbers(by_hash(resumed), expected)


def test_force_reruns_done_cells(tmp_path):
    grid = write_grid(tmp_path)
    args = ["--grid", str(grid), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
            "--quiet", "--datasets", "gmm2d", "--solvers", "ddim", "--pas", "off"]
    assert main(args) == 0
    assert main([*args, "--force"]) == 0
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 2 and rows[0]["config_hash"] == rows[1]["config_hash"]
    assert rows[0]["value"] == rows[1]["value"]
