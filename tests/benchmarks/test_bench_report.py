"""pytest-benchmark: the statistics/table path of the report and of bench.compare on a paper-size store.

A paper grid is 4 datasets x 5 solvers x 8 NFE x (base, PAS) = 320 cells; the store below holds three
reruns of each (960 rows), so "newest row per cell" has real work to do. Workflow: README.md here.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from bench.compare import compare
from report.load import latest_per_cell, load_rows
from report.tables import gain_table, metric_table, time_table, to_latex, to_markdown, with_labels

DATASETS = ("gmm2d", "digits", "digits32", "cifar10")
SOLVERS = ("ddim", "ipndm", "dpmpp", "unipc", "heun")
NFES = tuple(range(3, 11))
RERUNS = 3
CELLS = len(DATASETS) * len(SOLVERS) * len(NFES) * 2


def paper_store() -> pd.DataFrame:
    """Rows of RERUNS runs over the paper grid; later runs have later timestamps and other values."""
    records = []
    for run, (dataset, solver, nfe, pas) in itertools.product(
        range(RERUNS), itertools.product(DATASETS, SOLVERS, NFES, (False, True))
    ):
        records.append({
            "run_id": f"run-{run}", "created_at": f"2025-03-0{run + 1}T00:00:00+00:00",
            "git_sha": "0" * 40, "git_dirty": False, "host": "h", "device": "cpu",
            "torch_version": "2.14", "package_version": "0.1.0", "dataset": dataset,
            "solver": solver, "nfe": nfe, "pas": pas, "schedule": "polynomial", "order": None,
            "options": {}, "pas_params": 4 * (nfe // 3) if pas else None,
            "pas_steps": list(range(nfe // 3)) if pas else None, "pas_settings": None,
            "num_samples": 1000, "seeds": "0-999", "dtype": "float64", "precision": "float64",
            "metric": "fd", "value": (run + 1) * 10.0 / nfe * (0.7 if pas else 1.0),
            "s_per_sample": nfe * 1e-5, "preview": None,
            "config_hash": f"{dataset}-{solver}-{nfe}-{pas}",
        })
    return pd.DataFrame.from_records(records)


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "run.jsonl"
    path.write_text(paper_store().to_json(orient="records", lines=True))
    return path


@pytest.fixture(scope="module")
def cells(store_file: Path) -> pd.DataFrame:
    return with_labels(latest_per_cell(load_rows([store_file])))


def test_load_newest_per_cell(benchmark, store_file: Path) -> None:
    newest = benchmark(lambda: latest_per_cell(load_rows([store_file])))
    assert len(newest) == CELLS
    assert (newest["run_id"] == f"run-{RERUNS - 1}").all()


def test_all_tables(benchmark, cells: pd.DataFrame) -> None:
    def render_all() -> list[str]:
        texts = []
        for _, group in cells.groupby("dataset"):
            tables = [metric_table(group), gain_table(group), time_table(group)]
            texts += [fmt(t) for t in tables for fmt in (to_markdown, to_latex)]
        return texts

    texts = benchmark(render_all)
    assert len(texts) == len(DATASETS) * 6
    assert all(text.count("+30.0%") == len(SOLVERS) * len(NFES) for text in texts[2::6])


def test_compare_stores(benchmark, cells: pd.DataFrame) -> None:
    baseline = cells.set_index("config_hash")
    candidate = baseline.assign(value=baseline["value"].where(baseline["nfe"] != 3, baseline["value"] * 2))
    result = benchmark(compare, baseline, candidate, 1e-9, None)
    assert result.regressions == len(DATASETS) * len(SOLVERS) * 2
