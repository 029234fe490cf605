"""The progress log's time left: remaining cells weighted by their planned cost."""
from __future__ import annotations

import io

import pytest
import torch

import bench.estimate
import bench.progress
from bench.estimate import Costs
from bench.grids import parse_grid
from bench.plan import build_plan, cell_costs
from bench.progress import ProgressLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The progress log's clock, moved by hand."""
    fake = Clock()
    monkeypatch.setattr(bench.progress.time, "perf_counter", fake)
    return fake


def _row(dataset: str) -> dict:
    return {"dataset": dataset, "solver": "ddim", "nfe": 4, "pas": False, "method": "base",
            "metric": "fd", "value": 1.0, "timing_suspect": False}


def test_time_left_weights_remaining_cells_by_planned_cost(clock):
    stream = io.StringIO()
    log = ProgressLog(True, stream)
    # Four cheap cells, then two that are planned to cost ten times as much (toy's digits32).
    log.start(6, [("cheap", 1.0)] * 4 + [("dear", 10.0)] * 2)
    for _ in range(2):
        clock.now += 1.0
        log.cell_finished(_row("cheap"), 1.0)
    # 1 s per unit so far: 2 cheap cells + 2 x 10 units; counting cells would say 4 x 1 s.
    assert log.time_left() == pytest.approx(22.0, rel=1e-12)
    assert stream.getvalue().splitlines()[-1].endswith("about 0:00:22 left")
    clock.now += 2.0
    log.cell_finished(_row("cheap"), 2.0)
    assert log.time_left() == pytest.approx(4 / 3 + 20 * 4 / 3, rel=1e-12)
    clock.now += 1.0
    log.cell_finished(_row("cheap"), 1.0)
    # A dear cell took 30 s, 3 s per unit: the last one is planned at its own dataset's rate.
    clock.now += 30.0
    log.cell_finished(_row("dear"), 30.0)
    assert log.time_left() == pytest.approx(30.0, rel=1e-12)


def test_estimated_seconds_count_as_they_are_until_their_dataset_begins(clock):
    log = ProgressLog(False)
    log.start(3, [("small", 2.0), ("large", 5.0), ("large", 5.0)], timed={"small", "large"})
    clock.now += 6.0  # three times its estimate: per-cell overheads of a tiny dataset
    log.cell_finished(_row("small"), 6.0)
    assert log.time_left() == pytest.approx(10.0, rel=1e-12)
    clock.now += 7.5
    log.cell_finished(_row("large"), 7.5)
    assert log.time_left() == pytest.approx(7.5, rel=1e-12)


def test_without_costs_every_cell_counts_alike(clock):
    log = ProgressLog(False)
    log.start(5)
    clock.now += 6.0
    log.cell_finished(_row("any"), 6.0)
    assert log.time_left() == pytest.approx(24.0, rel=1e-12)


def test_cell_costs_of_checkpoint_cells_are_evaluations_times_sample_size(tmp_path):
    grid = parse_grid({"grid": {"datasets": ["cifar10"], "solvers": ["ddim"], "nfe": [5, 8],
                                "pas": "off", "num_samples": 10}}, "test.toml", "test")
    cells = build_plan(grid)
    # Sampling and the preview solve, 10 seeds each, x NFE, x 3 x 32 x 32 values per sample.
    assert cell_costs(cells, tmp_path, torch.device("cpu")) == [2 * 10 * n * 3072.0 for n in (5, 8)]


def test_cell_costs_of_analytic_cells_are_their_estimated_seconds(tmp_path, monkeypatch):
    """Analytic cells cost what the dry run's estimate says, at costs timed once per dataset:
    each cell its evaluations, samples and distances; the first also the reference solve and the
    metric's setup."""
    timed = Costs(evaluation_s=1e-6, metric_sample_s=1e-7, metric_cell_s=0.5, metric_setup_s=2.0)
    calls = []
    monkeypatch.setattr(bench.estimate, "calibrate", lambda *args: calls.append(args) or timed)
    grid = parse_grid({"grid": {"datasets": ["gmm2d"], "solvers": ["ddim"], "nfe": [4, 8],
                                "pas": "off", "num_samples": 100}}, "test.toml", "test")
    costs = cell_costs(build_plan(grid), tmp_path, torch.device("cpu"))
    # 100 samples and 64 preview seeds x NFE; the first cell also solves the 64 preview seeds'
    # Heun-200 reference; 2 distances per cell (seed blocks).
    first = (100 * 4 + 64 * 4 + 64 * 200) * 1e-6 + 100 * 1e-7 + 2 * 0.5 + 2.0
    second = (100 * 8 + 64 * 8) * 1e-6 + 100 * 1e-7 + 2 * 0.5
    assert costs == pytest.approx([first, second], rel=1e-12) and len(calls) == 1
