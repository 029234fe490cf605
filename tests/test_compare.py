"""python -m bench.compare: exit codes for identical, worse, slower, missing and malformed stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_factory import NFES, make_row, write_rows

from bench.compare import main

SOLVERS = ("ddim", "ipndm")


def rows(**changes: dict[str, float]) -> list[dict]:
    """Every gmm2d cell; ``changes`` maps "solver-nfe-pas" to field overrides (hash unchanged)."""
    out = []
    for solver in SOLVERS:
        for nfe in NFES:
            for pas in (False, True):
                row = make_row("gmm2d", solver, nfe, pas)
                row.update(changes.get(f"{solver}-{nfe}-{'pas' if pas else 'base'}", {}))
                out.append(row)
    return out


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "baseline" / "smoke.jsonl", rows())


def candidate(tmp_path: Path, **changes: dict[str, float]) -> Path:
    return write_rows(tmp_path / "candidate" / "run.jsonl", rows(**changes))


def test_identical_stores_pass(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(baseline), str(tmp_path / "baseline")]) == 0
    assert capsys.readouterr().out.startswith("12 cells matched, 0 changed, 0 regression(s)")


def test_worse_metric_past_tolerance_fails(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    value = make_row("gmm2d", "ipndm", 6, True)["value"]
    worse = candidate(tmp_path, **{"ipndm-6-pas": {"value": value * (1 + 1e-6)}})
    assert main([str(baseline), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out
    worse_lines = [line.split()[:4] for line in out.splitlines() if "WORSE" in line]
    assert worse_lines == [["gmm2d", "ipndm", "6", "pas"]]
    assert main([str(baseline), str(worse), "--metric-tol", "2e-6"]) == 0


def test_changes_within_default_tolerance_or_better_pass(tmp_path: Path, baseline: Path) -> None:
    value = make_row("gmm2d", "ddim", 4, False)["value"]
    changed = candidate(tmp_path, **{"ddim-4-base": {"value": value * (1 + 1e-12)},
                                     "ddim-6-base": {"value": 0.5}})
    assert main([str(baseline), str(changed)]) == 0


def test_slower_time_fails_only_with_time_tol(tmp_path: Path, baseline: Path) -> None:
    slower = candidate(tmp_path, **{"ddim-10-pas": {"s_per_sample": 10e-5 * 1.5}})
    assert main([str(baseline), str(slower)]) == 0
    assert main([str(baseline), str(slower), "--time-tol", "0.1"]) == 1
    assert main([str(baseline), str(slower), "--time-tol", "0.6"]) == 0


def test_newest_row_per_cell_is_compared(tmp_path: Path, baseline: Path) -> None:
    """An older, worse row in the candidate store is superseded by a newer, equal one."""
    cand = candidate(tmp_path)
    stale = make_row("gmm2d", "ddim", 4, False, value=100.0, created_at="2025-01-01T00:00:00+00:00")
    write_rows(cand.parent / "old.jsonl", [stale])
    assert main([str(baseline), str(cand.parent)]) == 0
    write_rows(cand.parent / "old.jsonl", [{**stale, "created_at": "2025-12-01T00:00:00+00:00"}])
    assert main([str(baseline), str(cand.parent)]) == 1


def _hashes(text: str) -> set[str]:
    """The config hashes of the test stores (any side) that ``text`` shows."""
    known = [row["config_hash"] for row in rows()]
    known += [make_row("digits", "ddim", nfe, False)["config_hash"] for nfe in NFES]
    return {value for value in known if value in text}


def test_missing_cells_are_counted_and_listed_only_with_verbose(
        tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    fewer_rows = rows()[:-1]
    extra = [make_row("digits", "ddim", nfe, False) for nfe in NFES]
    fewer = write_rows(tmp_path / "fewer.jsonl", fewer_rows + extra)
    assert main([str(baseline), str(fewer)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"11 cells matched, 0 changed, 0 regression(s); 1 only in {baseline}, "
                          f"3 only in {fewer}")
    assert not _hashes(out)
    table = out.split("cells per dataset and solver")[1].splitlines()[3:6]
    # dataset, solver, matched, changed, only in baseline, only in candidate
    assert [line.split() for line in table] == [["digits", "ddim", "0", "0", "0", "3"],
                                                ["gmm2d", "ddim", "6", "0", "0", "0"],
                                                ["gmm2d", "ipndm", "5", "0", "1", "0"]]
    assert "--verbose lists" in out

    assert main([str(baseline), str(fewer), "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert _hashes(verbose) == {rows()[-1]["config_hash"], *(row["config_hash"] for row in extra)}
    assert verbose.index("cells per dataset and solver") < verbose.index(f"only in {baseline}:")
    assert verbose.index(f"only in {baseline}:") < verbose.index(f"only in {fewer}:")

    other = write_rows(tmp_path / "other.jsonl", [make_row("digits", "ddim", 4, False)])
    assert main([str(baseline), str(other)]) == 1  # nothing matches: the hash changed
    assert "no cell matches" in capsys.readouterr().out


def test_changed_cells_come_before_the_counts(tmp_path: Path, baseline: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    value = make_row("gmm2d", "ddim", 6, True)["value"]
    changed = write_rows(tmp_path / "changed.jsonl",
                         rows(**{"ddim-6-pas": {"value": value / 2}})[1:])
    assert main([str(baseline), str(changed)]) == 0
    out = capsys.readouterr().out
    assert out.index("better") < out.index("cells per dataset and solver")
    assert not _hashes(out)


@pytest.mark.parametrize("kind", ["missing", "bad-json", "empty", "bad-tol"])
def test_bad_input_exits_2(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture, kind: str) -> None:
    bad = tmp_path / "bad.jsonl"
    if kind == "bad-json":
        bad.write_text('{"config_hash": "x"\n')
    elif kind == "empty":
        bad.write_text("")
    extra = ["--metric-tol", "-1"] if kind == "bad-tol" else []
    target = baseline if kind == "bad-tol" else bad
    assert main([str(baseline), str(target), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench.compare: ") and err.count("\n") == 1


def test_suspect_timings_are_skipped_and_reported(tmp_path: Path, baseline: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """A slower cell timed on a busy machine is skipped; a real slowdown beside it still fails.
    The baseline's rows predate the timing_suspect field: they count as not suspect."""
    busy = {"s_per_sample": 10e-5 * 3, "timing_suspect": True,
            "timing_suspect_reason": "load average 5.00 > 2 (cores)"}
    suspect_only = candidate(tmp_path, **{"ddim-10-pas": busy})
    assert main([str(baseline), str(suspect_only), "--time-tol", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s)" in out and "SLOWER" not in out
    skipped = out.split("time check skipped for 1 cell(s) with a suspect timing")[1]
    assert skipped.splitlines()[3].split() == ["gmm2d", "ddim", "10", "pas"]

    both = candidate(tmp_path, **{"ddim-10-pas": busy,
                                  "ipndm-4-base": {"s_per_sample": 4e-5 * 1.5, "timing_suspect": False}})
    assert main([str(baseline), str(both), "--time-tol", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out and "time check skipped for 1 cell(s)" in out
    assert [line.split()[:4] for line in out.splitlines() if "SLOWER" in line] == [
        ["gmm2d", "ipndm", "4", "base"]]
    assert main([str(baseline), str(both)]) == 0  # no --time-tol: nothing timed, nothing skipped
    assert "time check skipped" not in capsys.readouterr().out


def _with_se(row: dict, se: float, shift: float = 0.0) -> dict:
    return {**row, "value": row["value"] + shift, "value_se": se}


@pytest.mark.parametrize("in_se, flagged", [(5.0, True), (0.5, False)])
def test_metric_change_is_judged_against_combined_standard_errors(
        tmp_path: Path, in_se: float, flagged: bool, capsys: pytest.CaptureFixture) -> None:
    """Both sides have SE 0.01, so the combined SE is 0.01 * sqrt(2); a rise of 5 of them is a
    regression even at tolerance 0, a rise of 0.5 is noise (a near miss: it passes the tolerance)."""
    se = 0.01
    shift = in_se * se * np.sqrt(2)
    base = write_rows(tmp_path / "b" / "run.jsonl", [_with_se(row, se) for row in rows()])
    target = make_row("gmm2d", "ddim", 6, False)["config_hash"]
    cand = write_rows(tmp_path / "c" / "run.jsonl", [
        _with_se(row, se, shift if row["config_hash"] == target else 0.0) for row in rows()])
    assert main([str(base), str(cand), "--metric-tol", "0"]) == (1 if flagged else 0)
    line, = [line for line in capsys.readouterr().out.splitlines() if " fd " in line]
    assert line.split()[:4] == ["gmm2d", "ddim", "6", "base"]
    assert f"{in_se:+.2f}" in line and ("WORSE" in line) == flagged and ("near miss" in line) != flagged
    # z = 0 is the plain tolerance: the small rise is flagged too.
    assert main([str(base), str(cand), "--metric-tol", "0", "--z", "0"]) == 1


def test_rows_without_standard_errors_use_the_tolerance_alone(
        tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    value = make_row("gmm2d", "ipndm", 6, True)["value"]
    cand = write_rows(tmp_path / "c" / "run.jsonl", [
        _with_se(row, 1.0, value * 1e-6 if row["solver"] == "ipndm" and row["nfe"] == 6
                 and row["pas"] else 0.0) for row in rows()])
    assert main([str(baseline), str(cand)]) == 1  # the baseline has no value_se: SE 1.0 is moot
    assert "no SE" in capsys.readouterr().out


@pytest.mark.parametrize("in_se, flagged", [(5.0, True), (0.5, False)])
def test_time_change_is_judged_against_the_batch_spread(
        tmp_path: Path, in_se: float, flagged: bool, capsys: pytest.CaptureFixture) -> None:
    """Both sides time with SE 2e-6 s per sample: a 10% rise (1e-5 s) is 5 combined SEs at
    SE 1.41e-6 and 0.5 of them at SE 1.41e-5; with --time-tol 0.05 the first is SLOWER, the
    second a near miss. Without SEs (the plain baseline) the tolerance alone decides."""
    se = 1e-5 / (in_se * np.sqrt(2))
    target = make_row("gmm2d", "ddim", 6, False)
    base = write_rows(tmp_path / "b" / "run.jsonl",
                      [{**row, "s_per_sample": 1e-4, "s_per_sample_se": se} for row in rows()])
    cand = write_rows(tmp_path / "c" / "run.jsonl", [
        {**row, "s_per_sample": 1e-4 + (1e-5 if row["config_hash"] == target["config_hash"] else 0),
         "s_per_sample_se": se} for row in rows()])
    assert main([str(base), str(cand), "--time-tol", "0.05"]) == (1 if flagged else 0)
    line, = [line for line in capsys.readouterr().out.splitlines() if " fd " in line]
    assert line.split()[:4] == ["gmm2d", "ddim", "6", "base"]
    assert f"{in_se:+.2f}" in line and ("SLOWER" in line) == flagged
    assert ("near miss" in line) != flagged
    assert main([str(base), str(cand), "--time-tol", "0.05", "--z", "0"]) == 1
    assert main([str(base), str(cand), "--time-tol", "0.2"]) == 0


@pytest.mark.parametrize("se", [None, 0.01])
def test_a_change_inside_tolerance_and_z_is_same_and_not_counted(
        tmp_path: Path, se: float | None, capsys: pytest.CaptureFixture) -> None:
    """What a rerun on another CPU gives: a 1e-12 relative change (0.00 SE) is "same" in the
    table and the counts; a 1e-6 change is past the tolerance but inside z: a near miss."""
    def with_se(row: dict) -> dict:
        return row if se is None else {**row, "value_se": se}
    base = write_rows(tmp_path / "b" / "run.jsonl", [with_se(row) for row in rows()])
    value = make_row("gmm2d", "ddim", 4, False)["value"]
    moved = rows(**{"ddim-4-base": {"value": value * (1 + 1e-12)},
                    "ddim-6-base": {"value": make_row("gmm2d", "ddim", 6, False)["value"] * (1 - 1e-12)}})
    cand = write_rows(tmp_path / "c" / "run.jsonl", [with_se(row) for row in moved])
    assert main([str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("12 cells matched, 0 changed, 0 regression(s)")
    assert " fd " not in out  # no changed-cell table
    counts = out.split("cells per dataset and solver")[1].splitlines()[3:5]
    assert [line.split()[2:4] for line in counts] == [["6", "0"], ["6", "0"]]

    near = write_rows(tmp_path / "n" / "run.jsonl", [with_se(row) for row in rows(
        **{"ddim-4-base": {"value": value * (1 + 1e-6)}})])
    assert main([str(base), str(near), "--metric-tol", "1e-3" if se is None else "1e-9"]) == 0
    out = capsys.readouterr().out
    if se is None:  # inside the loose tolerance, no SE: same
        assert out.startswith("12 cells matched, 0 changed")
    else:
        assert out.startswith("12 cells matched, 1 changed, 0 regression(s)")
        line, = [line for line in out.splitlines() if " fd " in line]
        assert line.split()[:4] == ["gmm2d", "ddim", "4", "base"] and "near miss" in line
