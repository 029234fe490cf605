"""The smoke grid on a GPU, checked against the CPU float64 run of the same network.

A random-weight EDM-format network at 3 x 32 x 32 stands in for the CIFAR-10 checkpoint, with
seeded random Inception weights and made-up FID reference statistics, so nothing is downloaded.
The grid runs on the device with float32 solvers and the network in fp32, then in fp16
(autocast), and every cell is compared with the CPU float64 cell of the same solver, NFE and PAS:

- base cells: samples (the stored previews) agree to SAMPLE_TOL (absolute; images in [-1, 1]);
- every cell: FID agrees to FID_TOL (relative), and PAS corrected some steps.

fp32 allows for TF32 convolutions (cuDNN's default) and float32 solver arithmetic; fp16 for half
precision network outputs. Measured with the CPU standing in for the device (float32 or fp16
autocast against float64): base samples within 2e-6 in fp32 and 5e-4 in fp16, FID within 3e-4
relative. PAS cells' samples are not compared: on a random-weight network the PAS loss is nearly
flat, so float32 and float64 searches stop at different coordinates (samples up to 0.66 apart in
that CPU check, with the same corrected steps and FIDs within 3e-4). The made-up reference
statistics make FID large and insensitive; the base samples are the sharp check. The peak-memory
and timing fields must be filled and plausible.

Run on a GPU machine: ``.venv/bin/python -m pytest -q -m cuda``. Without a GPU the tests are
skipped; ``PASBENCH_CUDA_TESTS_ON=cpu`` runs the same bodies with ``--device cpu`` (fp16 then
autocasts on the CPU), which checks the test logic itself.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import local_cifar10_options, read_rows

from bench.grids import load_grid
from bench.run import main

DEVICE = os.environ.get("PASBENCH_CUDA_TESTS_ON", "cuda")
SAMPLE_TOL = {"fp32": 5e-3, "fp16": 2e-2}
FID_TOL = {"fp32": 1e-3, "fp16": 1e-2}
# Two batches (a warm-up and a timed one). On the CPU, Inception's features of 299 x 299 images
# dominate the time, so the CPU check of these tests uses fewer samples.
NUM_SAMPLES = 256 if DEVICE == "cuda" else 16
BATCH = NUM_SAMPLES // 2
SMOKE32 = """
[grid]
name = "smoke32"
datasets = ["cifar10"]
solvers = {solvers}
nfe = {nfe}
pas = "both"

[pas]
trajectories = 128
teacher_nfe = 40
epochs = 50
"""

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device (PASBENCH_CUDA_TESTS_ON=cpu: same tests on CPU)"),
]


@pytest.fixture(scope="module")
def local_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return local_cifar10_options(tmp_path_factory.mktemp("files"))


def run_smoke(folder: Path, files: list[str], *options: str) -> dict[tuple, dict]:
    """The smoke grid's cells on cifar10 with ``options``; rows by (solver, nfe, pas), previews
    loaded. PAS is fitted on fewer teacher trajectories than the smoke grid's, because the CPU
    float64 reference has to fit it too, in 3072 dimensions."""
    smoke = load_grid("smoke")
    grid = folder / "smoke32.toml"
    grid.write_text(SMOKE32.format(solvers=json.dumps(list(smoke.solvers)), nfe=list(smoke.nfe)))
    argv = ["--grid", str(grid), "--num-samples", str(NUM_SAMPLES),
            "--batch-size", str(BATCH), "--out", str(folder / "out"),
            "--cache-dir", str(folder / "cache"), "--quiet", *files, *options]
    assert main(argv) == 0
    rows = {}
    for row in read_rows(folder / "out"):
        with np.load(folder / "out" / row["preview"]) as preview:
            row["samples"] = preview["samples"]
        rows[row["solver"], row["nfe"], row["pas"]] = row
    return rows


@pytest.fixture(scope="module")
def cpu_float64(local_files: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_smoke(tmp_path_factory.mktemp("cpu64"), local_files, "--device", "cpu",
                     "--dtype", "float64", "--precision", "fp32")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_smoke_grid_on_the_device_matches_cpu_float64(local_files, cpu_float64, tmp_path,
                                                      precision):
    rows = run_smoke(tmp_path, local_files, "--device", DEVICE, "--dtype", "float32",
                     "--precision", precision)
    assert rows.keys() == cpu_float64.keys() and len(rows) == 8  # ddim, dpmpp x NFE 5, 10 x PAS
    for key, row in rows.items():
        want = cpu_float64[key]
        assert row["dtype"] == "float32" and row["precision"] == precision
        if row["pas"]:
            assert row["pas_params"] > 0 and np.isfinite(row["samples"]).all()
        else:
            gap = np.abs(row["samples"] - want["samples"]).max()
            assert gap <= SAMPLE_TOL[precision], (key, gap)
        assert row["value"] == pytest.approx(want["value"], rel=FID_TOL[precision]), key
        check_resources(row)


def check_resources(row: dict) -> None:
    """Peak memory and timing fields of a row sampled on DEVICE."""
    assert (row["device"] == "cpu") == (DEVICE == "cpu")
    # Peak memory: CUDA allocations on a GPU (a tiny network: well under 4 GiB), RSS on the CPU.
    assert 0 < row["peak_mem_mb"] < 4096 or DEVICE == "cpu"
    assert row["peak_mem_mb"] > 0
    assert row["warmup_s"] > 0 and row["timed_samples"] == NUM_SAMPLES - BATCH
    assert row["sample_s"] > 0 and row["s_per_sample"] == row["sample_s"] / row["timed_samples"]
    assert 0 < row["s_per_sample_min"] <= row["s_per_sample_median"] <= row["s_per_sample_max"]
    assert row["metric_s"] > 0 and row["cpu_s"] >= 0 and row["torch_threads"] >= 1
    assert isinstance(row["timing_suspect"], bool)
    assert math.isfinite(row["value"]) and row["value"] > 0
