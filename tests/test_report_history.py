"""python -m report --history: the trend page of a stored bench.history."""

from __future__ import annotations

from pathlib import Path

import pytest
from git_helpers import linear_repo
from store_factory import make_row, write_rows

from bench.history import main as history_main
from report.__main__ import main, parse_args

COMMITS = 40
STEP_AT = 25  # digits' ddim NFE 4 metric rises by 6 SE from this commit on


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 40-commit history of 8 cells (2 datasets x NFE 4, 6 x base/PAS) on two hosts."""
    folder = tmp_path_factory.mktemp("history")
    repo, shas = linear_repo(folder / "repo", COMMITS)
    rows = []
    for index, sha in enumerate(shas):
        created = f"2025-03-01T{index // 60:02d}:{index % 60:02d}:00+00:00"
        for dataset in ("gmm2d", "digits"):
            for nfe in (4, 6):
                for pas in (False, True):
                    row = make_row(
                        dataset,
                        "ddim",
                        nfe,
                        pas,
                        git_sha=sha,
                        created_at=created,
                        value_se=0.01,
                        s_per_sample_se=1e-6,
                        timing_suspect=index == COMMITS - 1,
                    )
                    if (dataset, nfe, pas) == ("digits", 4, False) and index >= STEP_AT:
                        row["value"] += 0.06
                    rows += [row, {**row, "host": "other", "s_per_sample": 2 * row["s_per_sample"]}]
    store = write_rows(folder / "store" / "run.jsonl", rows)
    out = folder / "history.json"
    assert history_main([str(store), "--repo", str(repo), "--out", str(out)]) == 0
    return out, shas


def test_trend_page_shows_steps_with_commit_and_subject(
    tmp_path: Path, stored: tuple[Path, list[str]]
) -> None:
    history, shas = stored
    assert main(["--history", str(history), "--out", str(tmp_path), "--last", "0"]) == 0
    page = (tmp_path / "history.html").read_text()
    assert "every commit point" in page and "No regression" not in page
    row = page.split("<tbody>")[1].split("</tr>")[0]
    cells = [cell.split(">")[1].split("<")[0] for cell in row.split("<td")[1:]]
    assert cells[:7] == [shas[STEP_AT][:8], f"commit {STEP_AT}", "digits", "ddim", "4", "base", "fd"]
    assert cells[-3:] == ["+0.80%", "+4.2", "worse"]  # 0.06 on 7.5; 6 / sqrt(2) SE
    for dataset in ("gmm2d", "digits"):
        for kind in ("metric", "time"):
            assert (tmp_path / "history" / f"{dataset}_{kind}.png").stat().st_size > 0
            assert f'src="history/{dataset}_{kind}.png"' in page
    assert (tmp_path / "history" / "steps.md").read_text().count("worse") == 1


def test_the_last_commits_by_default(tmp_path: Path, stored: tuple[Path, list[str]]) -> None:
    history, shas = stored
    assert main(["--history", str(history), "--out", str(tmp_path), "--last", "10"]) == 0
    page = (tmp_path / "history.html").read_text()
    assert f"the last 10 commit points, {shas[-10][:8]} to {shas[-1][:8]}" in page
    assert "No regression or improvement detected." in page  # the step is older
    assert parse_args(["--history", str(history)]).last == 30


def test_a_bad_history_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["--history", str(bad), "--out", str(tmp_path)]) == 2
    assert main(["--history", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("report: ") for line in err)
