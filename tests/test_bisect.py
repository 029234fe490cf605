"""python -m bench.bisect: the injected regression commit, with no more cell runs than halving."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_bench import CELL, COMMAND, fake_repo, run_log
from store_factory import make_row

from bench.backfill import backfill
from bench.bisect import main

SE = 0.01
HASH = make_row(*CELL)["config_hash"]


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs.log"
    monkeypatch.setenv("FAKE_RUN_LOG", str(path))
    return path


def values_with_step(k: int, size: float = 5 * SE) -> list[str]:
    """Nine commits whose value rises by ``size`` from commit ``k`` on, with at most 0.5 SE of
    wobble before and after (never a regression by itself)."""
    wobble = [0.0, 0.5, -0.5, 0.3, -0.2, 0.4, -0.4, 0.1, 0.2]
    return [str(1.0 + wobble[index] * SE + (size if index >= k else 0.0)) for index in range(9)]


def bisect(repo: Path, store: Path, good: str, bad: str, cell: str = HASH) -> int:
    options = ["--cell", cell, "--store", str(store), "--repo", str(repo), "--command", COMMAND]
    return main([good, bad, *options])


@pytest.mark.parametrize("k", [1, 5, 8])
def test_bisect_finds_the_injected_commit_with_halving_runs(
    tmp_path: Path, log: Path, k: int, capsys: pytest.CaptureFixture
) -> None:
    repo, _, shas = fake_repo(tmp_path / "repo", values_with_step(k))
    store = tmp_path / "store"
    backfill(repo, shas[0], "smoke", store, COMMAND)  # GOOD and BAD measured beforehand
    backfill(repo, shas[-1], "smoke", store, COMMAND)
    before = len(run_log(log))
    assert bisect(repo, store, shas[0], shas[-1]) == 0
    out = capsys.readouterr().out
    assert f"first bad commit: {shas[k]} value" in out
    runs = run_log(log)[before:]
    assert len(runs) == math.ceil(math.log2(len(shas) - 1)) == 3  # 8 candidates after GOOD
    assert f"cell runs: {len(runs)}" in out
    assert bisect(repo, store, shas[0], shas[-1]) == 0  # the second time, from the store alone
    assert "cell runs: 0" in capsys.readouterr().out


def test_unmeasurable_commits_are_skipped_and_a_good_bad_is_reported(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture
) -> None:
    values = values_with_step(6)
    values[4] = "broken"  # the first middle candidate: skipped, a neighbour is tried
    repo, _, shas = fake_repo(tmp_path / "repo", values)
    store = tmp_path / "store"
    backfill(repo, shas[0], "smoke", store, COMMAND)
    assert bisect(repo, store, shas[0], shas[-1]) == 0
    out, err = capsys.readouterr()
    assert f"{shas[4][:8]}: skipped" in err and f"{shas[6][:8]}: bad" in err  # progress
    assert (
        f"first bad commit: {shas[6]}" in out
        and f"skipped (could not measure the cell): {shas[4][:8]}" in out
    )
    assert len(run_log(log)) == 1 + 1 + 4  # GOOD by backfill, BAD, halving with one skip
    assert bisect(repo, store, shas[0], shas[5]) == 1  # not worse than GOOD
    assert "no first bad commit" in capsys.readouterr().out
    assert bisect(repo, store, shas[0], shas[-1], cell="nosuchcell") == 2
    assert capsys.readouterr().err.startswith("bench.bisect: no row of cell nosuchcell")
