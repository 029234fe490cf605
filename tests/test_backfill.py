"""python -m bench.backfill: each commit once, in its own worktree; resumable; failures recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fake_bench import COMMAND, fake_repo, run_log
from git_helpers import commit, init_repo

import bench.backfill
from bench.backfill import backfill, main
from bench.results import load_rows


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs.log"
    monkeypatch.setenv("FAKE_RUN_LOG", str(path))
    return path


def test_each_commit_runs_once_and_a_failing_one_is_recorded(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, base, shas = fake_repo(tmp_path / "repo", ["1.0", "not a number", "1.5"])
    store = tmp_path / "store"
    status = backfill(repo, f"{base}..main", "smoke", store, COMMAND)
    assert status == {shas[0]: "stored", shas[1]: "failed", shas[2]: "stored"}
    assert run_log(log) == shas
    rows = load_rows([store])
    assert sorted(zip(rows["git_sha"], rows["value"], strict=True)) == sorted(
        [(shas[0], 1.0), (shas[2], 1.5)]
    )
    failure = (store / "failed" / f"{shas[1]}.log").read_text()
    assert "exit status 1" in failure and "ValueError" in failure
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[-1].split(" (")[0] for line in lines] == ["stored", "failed", "stored"]
    assert lines[1].startswith(f"[2/3] {shas[1][:8]} value not a number")
    # A second pass runs nothing: stored and failed commits are skipped.
    assert (
        main([f"{base}..main", "--repo", str(repo), "--store", str(store), "--command", COMMAND])
        == 0
    )
    assert run_log(log) == shas
    assert capsys.readouterr().out.startswith(
        f"3 commit(s) in {store}: 2 skipped: stored, 1 skipped: failed"
    )
    # The worktrees are gone.
    assert not list((repo / ".git" / "worktrees").glob("*"))


def test_an_interrupted_backfill_resumes_without_rerunning_finished_commits(
    tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, base, shas = fake_repo(tmp_path / "repo", ["1.0", "1.1", "1.2"])
    store = tmp_path / "store"
    real = bench.backfill.run_at_commit

    def interrupted_at_second(repo: Path, sha: str, *args: object) -> object:
        if sha == shas[1]:
            raise KeyboardInterrupt
        return real(repo, sha, *args)

    monkeypatch.setattr(bench.backfill, "run_at_commit", interrupted_at_second)
    with pytest.raises(KeyboardInterrupt):
        backfill(repo, f"{base}..main", "smoke", store, COMMAND)
    assert run_log(log) == shas[:1]
    monkeypatch.setattr(bench.backfill, "run_at_commit", real)
    status = backfill(repo, f"{base}..main", "smoke", store, COMMAND)
    assert status == {shas[0]: "skipped: stored", shas[1]: "stored", shas[2]: "stored"}
    assert run_log(log) == shas  # the first commit ran once
    assert sorted(load_rows([store])["value"]) == [1.0, 1.1, 1.2]


def test_bad_range_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo, _, _ = fake_repo(tmp_path / "repo", ["1.0"])
    assert main(["nosuch..main", "--repo", str(repo), "--store", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("bench.backfill: git rev-list")


TINY_GRID = """\
[grid]
datasets = ["gmm2d"]
solvers = ["ddim"]
nfe = [2]
pas = "off"
num_samples = 64
dtype = "float64"
"""


@pytest.mark.slow
def test_the_default_command_runs_the_real_runner_in_the_worktree(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A repository holding this project's code: the default command (bench.run) runs a
    one-cell grid there and its row names the worktree's commit."""
    root = Path(__file__).resolve().parents[1]
    repo = init_repo(tmp_path / "repo")
    for package in ("bench", "solvers", "pas", "gits", "amed"):
        if not (root / package).is_dir():
            continue
        shutil.copytree(
            root / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    sha = commit(repo, "the project")
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY_GRID)
    store = tmp_path / "store"
    assert main([sha, "--repo", str(repo), "--grid", str(grid), "--store", str(store)]) == 0
    assert not (store / "failed").exists(), capsys.readouterr().err
    (row,) = load_rows([store]).to_dict("records")
    assert (row["git_sha"], row["git_dirty"], row["dataset"], row["nfe"]) == (
        sha,
        False,
        "gmm2d",
        2,
    )
