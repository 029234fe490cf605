"""python -m bench.history: ancestry order, dirty points, steps, suspect timings, CI exit status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from git_helpers import commit, git, init_repo, linear_repo
from store_factory import make_row, write_rows

from bench.history import Gates, build, main

SE = 0.01
BASE_TIME = 1e-3
TIME_SE = 1e-5


def at(sha: str, minute: int, cell: tuple = ("gmm2d", "ddim", 4, False), **fields: object) -> dict:
    """One row of ``cell`` run at ``sha``, ``minute`` minutes into the day."""
    created = f"2025-03-01T{minute // 60:02d}:{minute % 60:02d}:00+00:00"
    defaults = {"value_se": SE, "s_per_sample": BASE_TIME, "s_per_sample_se": TIME_SE}
    return make_row(*cell, git_sha=sha, created_at=created, **{**defaults, **fields})


@pytest.fixture
def branchy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """main: a - b - c - merge(e); feature from b: d1 - d2 - e ... merged into main."""
    repo = init_repo(tmp_path / "repo")
    shas = {"a": commit(repo, "a"), "b": commit(repo, "b")}
    git(repo, "checkout", "-q", "-b", "feature")
    shas["d1"] = commit(repo, "d1")
    shas["d2"] = commit(repo, "d2")
    git(repo, "checkout", "-q", "main")
    shas["c"] = commit(repo, "c")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    shas["m"] = git(repo, "rev-parse", "HEAD")
    return repo, shas


def test_series_follow_git_ancestry_and_a_dirty_run_follows_its_commit(
    tmp_path: Path, branchy: tuple[Path, dict[str, str]]
) -> None:
    repo, shas = branchy
    # Run times deliberately out of ancestry order; b also has a dirty run, run first of all.
    runs = [
        ("m", 1, False),
        ("d2", 2, False),
        ("b", 3, False),
        ("a", 4, False),
        ("c", 5, False),
        ("d1", 6, False),
        ("b", 0, True),
    ]
    rows = [
        at(shas[name], minute, git_dirty=dirty, value=1.0 + minute) for name, minute, dirty in runs
    ]
    rows.append(at("f" * 40, 7, value=99.0))  # a commit this repository does not know, run last
    store = write_rows(tmp_path / "store" / "run.jsonl", rows)
    history = build([store.parent], repo, Gates())
    order = history.commits.sort_values("position")
    names = {sha: name for name, sha in shas.items()}
    labels = [
        names.get(sha, "unknown") + ("+dirty" if dirty else "")
        for sha, dirty in zip(order["git_sha"], order["dirty"], strict=True)
    ]
    parents = [line.split() for line in git(repo, "rev-list", "--parents", "--all").splitlines()]
    position = {label: index for index, label in enumerate(labels)}
    for child, *parent_list in parents:
        for parent in parent_list:
            assert position[names[parent]] < position[names[child]], labels
    assert position["b+dirty"] == position["b"] + 1
    assert abs(position["d2"] - position["d1"]) == 1  # the branch stays together
    assert labels[-1] == "unknown" and labels[0] == "a"
    assert int(history.commits["known"].sum()) == 7  # six commits and the dirty point
    metric = history.points[history.points["kind"] == "metric"].sort_values("position")
    # Each point holds its own run's value (value = 1 + run minute).
    minutes = {name + ("+dirty" if dirty else ""): minute for name, minute, dirty in runs}
    expected = [1.0 + minutes[label] if label in minutes else 99.0 for label in labels]
    assert metric["value"].tolist() == expected and metric["position"].tolist() == list(range(8))


def _series(
    shas: list[str],
    values: list[float],
    times: list[float] | None = None,
    suspect: list[bool] | None = None,
    cell: tuple = ("gmm2d", "ddim", 4, False),
) -> list[dict]:
    times = times or [BASE_TIME] * len(shas)
    suspect = suspect or [False] * len(shas)
    return [
        at(sha, index, cell, value=value, s_per_sample=time, timing_suspect=busy)
        for index, (sha, value, time, busy) in enumerate(
            zip(shas, values, times, suspect, strict=True)
        )
    ]


@pytest.fixture(scope="module")
def twelve(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return linear_repo(tmp_path_factory.mktemp("linear"), 12)


def test_a_5_se_step_is_reported_at_its_commit_and_noise_is_not(
    tmp_path: Path, twelve: tuple[Path, list[str]], capsys: pytest.CaptureFixture
) -> None:
    repo, shas = twelve
    rng = np.random.default_rng(1)
    k = 7
    step = [1.0 + (5 * SE if index >= k else 0.0) for index in range(12)]
    wobble = list(1.0 + 0.5 * SE * rng.uniform(-1, 1, 12))
    # Timings 1% noisy (SE 1%), with a 50% slowdown in rows timed on a busy machine.
    noisy = list(BASE_TIME * (1 + 0.01 * rng.standard_normal(12)))
    busy = [index >= 9 for index in range(12)]
    slow = [time * (1.5 if flag else 1.0) for time, flag in zip(noisy, busy, strict=True)]
    rows = (
        _series(shas, step)
        + _series(shas, wobble, cell=("gmm2d", "ddim", 10, False))
        + _series(shas, [1.0] * 12, slow, busy, cell=("digits", "ddim", 4, False))
    )
    store = write_rows(tmp_path / "store" / "run.jsonl", rows)
    assert main([str(store), "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "12 commit point(s) (12 ordered by git ancestry), 3 metric and 3 wall-clock "
        "series; 1 regression(s), 0 improvement(s); 3 timing_suspect point(s) drawn but not used"
    )
    (line,) = [line for line in out.splitlines() if line.startswith("gmm2d")]
    assert line.split()[:7] == ["gmm2d", "ddim", "4", "base", "fd", shas[k][:8], "commit"]
    assert line.split()[7:] == [str(k), "1", "1.05", "+5.00%", "+3.5", "worse"]  # 5 / sqrt(2) SE
    history = build([store], repo, Gates())
    assert history.steps["git_sha"].tolist() == [shas[k]]
    assert history.points["suspect"].sum() == 3  # drawn, not used


def test_a_time_step_is_reported_per_host(tmp_path: Path, twelve: tuple[Path, list[str]]) -> None:
    repo, shas = twelve
    slower = [BASE_TIME * (1.2 if index >= 4 else 1.0) for index in range(12)]
    rows = _series(shas, [1.0] * 12, slower) + [
        {**row, "host": "other"} for row in _series(shas, [1.0] * 12)
    ]
    history = build([write_rows(tmp_path / "run.jsonl", rows)], repo, Gates())
    (step,) = history.steps.itertuples()
    assert (step.kind, step.host, step.git_sha, step.verdict) == (
        "time",
        "testhost",
        shas[4],
        "worse",
    )
    assert step.rel == pytest.approx(0.2)
    # Inside the time tolerance: not reported.
    assert build([write_rows(tmp_path / "run.jsonl", rows)], repo, Gates(time_tol=0.3)).steps.empty


@pytest.mark.parametrize("start, direction, code", [(11, 1, 1), (6, 1, 0), (11, -1, 0)])
def test_fail_on_regression_only_when_the_newest_commit_starts_one(
    tmp_path: Path,
    twelve: tuple[Path, list[str]],
    start: int,
    direction: int,
    code: int,
    capsys: pytest.CaptureFixture,
) -> None:
    repo, shas = twelve
    values = [1.0 + (direction * 6 * SE if index >= start else 0.0) for index in range(12)]
    store = write_rows(tmp_path / "run.jsonl", _series(shas, values))
    assert main([str(store), "--repo", str(repo), "--fail-on-regression"]) == code
    assert main([str(store), "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert ("starts 1 regression(s)" in out) == (code == 1)


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path), "--z", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and all(
        line.startswith("bench.history: ") for line in err.splitlines()
    )
