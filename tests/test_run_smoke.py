"""The shipped smoke grid end to end in a real process, then a rerun that skips every cell."""
from __future__ import annotations

import math

import numpy as np
import pytest
from run_helpers import REPO, read_rows, run_cli

from bench.grids import load_grid
from bench.results import ROW_KEYS

STEPS = {5: 5, 10: 10}


def _check_row(row: dict, out) -> None:
    assert list(row) == list(ROW_KEYS)
    assert row["grid"] == "smoke" and row["metric"] == "fd" and row["device"] == "cpu"
    assert math.isfinite(row["value"]) and row["value"] >= 0
    assert math.isfinite(row["rmse_to_teacher"])
    assert row["num_samples"] == 2000 and row["seeds"] == "0-1999" and row["world_size"] == 1
    assert row["sample_s"] > 0 and row["metric_s"] > 0 and row["peak_mem_mb"] > 0
    # Two batches of 1000: the first is the untimed warm-up, the second is timed.
    assert row["warmup_s"] > 0 and row["timed_samples"] == 1000
    assert row["s_per_sample"] == row["sample_s"] / 1000
    assert row["s_per_sample_min"] == row["s_per_sample_median"] == row["s_per_sample_max"]
    assert row["cpu_s"] > 0 and row["torch_threads"] == 1 and row["cpu_count"] >= 1
    assert row["load_before"] >= 0 and row["load_after"] >= 0
    assert isinstance(row["timing_suspect"], bool)
    assert (row["timing_suspect_reason"] is None) == (not row["timing_suspect"])
    assert len(row["config_hash"]) == 64 and isinstance(row["git_dirty"], bool)
    expected_order = 3 if row["solver"] == "dpmpp" else None
    assert row["order"] == expected_order
    assert row["schedule"] == ("logsnr" if row["solver"] == "dpmpp" else "polynomial")
    if row["solver"] == "dpmpp":
        # thresholding follows the dataset: off for the analytic mixtures.
        assert row["options"]["thresholding"] is False
    if row["pas"]:
        assert row["pas_settings"]["trajectories"] == 1000
        # At most k = 4 coordinates per corrected step, at least one.
        assert len(row["pas_steps"]) <= row["pas_params"] <= 4 * len(row["pas_steps"])
        assert all(0 <= step < row["nfe"] for step in row["pas_steps"])
        assert row["pas_fit_s"] > 0 and row["teacher_s"] >= 0
        assert row["pas_holdout_gain"] >= 0
        # The fit's peak RssAnon on the CPU: at least the interpreter with torch (> 50 MiB).
        assert 50 < row["pas_peak_mem_mb"] < 24 * 2**10
    else:
        assert row["pas_params"] is row["pas_steps"] is row["pas_settings"] is None
    with np.load(out / row["preview"]) as preview:
        shape = (2,) if row["dataset"] == "gmm2d" else (1, 8, 8)
        assert preview["samples"].shape == (64, *shape) and preview["samples"].dtype == np.float32
        if row["dataset"] == "gmm2d":
            assert preview["trajectory"].shape == (STEPS[row["nfe"]] + 1, 64, 2)
            np.testing.assert_array_equal(preview["trajectory"][-1], preview["samples"])
            assert preview["teacher"].shape == (101, 64, 2)
            # Same latents: the student and the teacher start at the same noise state.
            np.testing.assert_allclose(preview["trajectory"][0], preview["teacher"][0], rtol=1e-6)
        else:
            assert set(preview.files) == {"samples"}


@pytest.mark.invariance
def test_smoke_grid_end_to_end_then_rerun_skips(tmp_path):
    out, cache = tmp_path / "runs", tmp_path / "cache"
    done = run_cli("--grid", "smoke", "--out", str(out), "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    grid = load_grid("smoke")
    assert len(rows) == len(grid.datasets) * len(grid.solvers) * len(grid.nfe) * 2 == 16
    assert len({row["config_hash"] for row in rows}) == 16
    assert len({row["run_id"] for row in rows}) == 1
    for row in rows:
        _check_row(row, out)
    # PAS is fitted once per (dataset, solver, NFE): one artifact file each.
    assert len(list((cache / "artifacts").glob("*.json"))) == 8
    # PAS helps on average over the grid (the corrected steps were accepted for lowering the loss).
    base = {(r["dataset"], r["solver"], r["nfe"]): r["value"] for r in rows if not r["pas"]}
    gains = [base[(r["dataset"], r["solver"], r["nfe"])] / r["value"] for r in rows if r["pas"]]
    assert np.exp(np.mean(np.log(gains))) > 1
    assert "digits" in done.stdout and "value" in done.stdout  # the summary table

    # The committed baseline: every smoke cell must match it to float64 rounding.
    baseline = REPO / "results" / "baseline" / "smoke.jsonl"
    compared = run_cli(str(baseline), str(out), module=("-m", "bench.compare"))
    assert compared.returncode == 0, compared.stdout + compared.stderr

    again = run_cli("--grid", "smoke", "--out", str(out), "--cache-dir", str(cache))
    assert again.returncode == 0, again.stderr
    assert "16 cell(s) skipped" in again.stdout
    assert len(list(out.glob("*.jsonl"))) == 1 and read_rows(out) == rows
