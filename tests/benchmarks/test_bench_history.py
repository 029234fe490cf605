"""pytest-benchmark: bench.history over 200 commits x 120 cells (one host): loading 24,000 rows,
git-ancestry order, 240 series (metric and wall-clock) and their step detection.
Workflow: README.md here."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.history import Gates, build

COMMITS = 200
DATASETS = ("gmm2d", "digits", "digits32", "cifar10")
SOLVERS = ("ddim", "ipndm", "dpmpp")
NFES = (4, 5, 6, 8, 10)
CELLS = len(DATASETS) * len(SOLVERS) * len(NFES) * 2
METRIC_STEP, TIME_STEP = 60, 150  # every tenth cell's metric rises 5 SE; every cell 20% slower


def linear_repo(path: Path) -> list[str]:
    """COMMITS empty commits on one branch (git fast-import: one process); oldest first."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    stream = "".join(
        f"commit refs/heads/main\ncommitter T <t@example.com> {1700000000 + i} +0000\n"
        f"data {len(f'commit {i}')}\ncommit {i}\n"
        for i in range(COMMITS)
    )
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"], input=stream, text=True, check=True
    )
    listed = subprocess.run(
        ["git", "-C", str(path), "rev-list", "--reverse", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


@pytest.fixture(scope="module")
def history_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("history")
    shas = linear_repo(folder / "repo")
    rng = np.random.default_rng(0)
    lines = []
    for cell, (dataset, solver, nfe, pas) in enumerate(
        itertools.product(DATASETS, SOLVERS, NFES, (False, True))
    ):
        noise = 1 + 0.01 * rng.standard_normal(COMMITS)
        for index, sha in enumerate(shas):
            lines.append(
                json.dumps(
                    {
                        "config_hash": f"cell{cell:03d}",
                        "git_sha": sha,
                        "git_dirty": False,
                        "created_at": f"2025-03-{1 + index // 24:02d}T{index % 24:02d}:00:00+00:00",
                        "host": "h",
                        "device": "cpu",
                        "dataset": dataset,
                        "solver": solver,
                        "nfe": nfe,
                        "pas": pas,
                        "metric": "fd",
                        "value_se": 0.01,
                        "s_per_sample_se": 1e-6,
                        "value": 10 / nfe
                        + (0.05 if cell % 10 == 0 and index >= METRIC_STEP else 0.0),
                        "s_per_sample": nfe
                        * 1e-4
                        * noise[index]
                        * (1.2 if index >= TIME_STEP else 1.0),
                    }
                )
            )
    store = folder / "store"
    store.mkdir()
    (store / "run.jsonl").write_text("\n".join(lines) + "\n")
    return store, folder / "repo"


def test_history_of_200_commits_and_120_cells(benchmark, history_store: tuple[Path, Path]) -> None:
    store, repo = history_store
    history = benchmark.pedantic(build, args=([store], repo, Gates()), rounds=1, iterations=1)
    assert len(history.commits) == COMMITS and int(history.commits["known"].sum()) == COMMITS
    assert history.points["series"].nunique() == 2 * CELLS
    steps = history.steps.groupby(["kind", "position", "verdict"]).size().to_dict()
    assert steps == {
        ("metric", METRIC_STEP, "worse"): CELLS // 10,
        ("time", TIME_STEP, "worse"): CELLS,
    }
