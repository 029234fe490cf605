"""Shared pieces of the bench.run tests: tiny grid files, running the CLI, reading rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from edm_format import tiny_network, write_edm_pickle

from bench.metrics.inception import FEATURE_DIM, load_inception
from bench.results import PROVENANCE_KEYS

REPO = Path(__file__).resolve().parent.parent

# Two datasets x two solvers x one NFE x PAS off/on = 8 cells; float64 so sums are comparable.
TINY_GRID = """
[grid]
name = "tiny"
datasets = ["gmm2d", "digits"]
solvers = ["ddim", "dpmpp"]
nfe = [4]
pas = "both"
num_samples = 300
batch_size = 128
dtype = "float64"
rmse_samples = 16

[pas]
trajectories = 100
teacher_nfe = 40
epochs = 50
"""


def write_grid(folder: Path, text: str = TINY_GRID, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None,
            module: tuple[str, ...] = ("-m", "bench.run"),
            stderr_file: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m bench.run ARGS`` (or another module line) in a fresh single-thread process;
    stderr is captured, or written to ``stderr_file`` when given."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, *module, *args]
    if stderr_file is None:
        return subprocess.run(command, cwd=REPO, env=full_env, check=False, capture_output=True,
                              text=True, timeout=300)
    with open(stderr_file, "w") as stderr:
        return subprocess.run(command, cwd=REPO, env=full_env, check=False, stdout=subprocess.PIPE,
                              stderr=stderr, text=True, timeout=300)


def read_rows(out: Path) -> list[dict]:
    """Every row of every run file in ``out``, checking each line is complete JSON."""
    rows = []
    for path in sorted(out.glob("*.jsonl")):
        text = path.read_text()
        assert text == "" or text.endswith("\n"), f"{path} ends with a partial line"
        rows.extend(json.loads(line) for line in text.splitlines())
    return rows


def measured(row: dict) -> dict:
    """A row without the fields that describe when, where and how fast it was made."""
    return {key: value for key, value in row.items() if key not in PROVENANCE_KEYS}


def by_hash(rows: list[dict]) -> dict[str, dict]:
    return {row["config_hash"]: measured(row) for row in rows}


# Computed numbers of float64 runs that batch, split or thread differently, with the relative
# tolerance each keeps: the sums run in another order (BLAS blocking depends on the shapes and the
# CPU), nothing else changes. Leave-one-block-out values and their spread (the jackknife SE) are
# differences of near-equal sums, so they keep fewer digits.
FLOAT64_REL = 1e-12
NUMBERS = {"value": FLOAT64_REL, "rmse_to_teacher": FLOAT64_REL, "pas_holdout_gain": FLOAT64_REL,
           "value_blocks": 1e-10, "value_se": 1e-8}


def assert_same_numbers(got: dict[str, dict], want: dict[str, dict]) -> None:
    """Two ``by_hash`` views hold the same cells, equal in every field but NUMBERS, which agree to
    their tolerances (or are both None)."""
    assert got.keys() == want.keys()
    for key, row in want.items():
        for name, rel in NUMBERS.items():
            want_value = row[name]
            if want_value is not None:
                want_value = pytest.approx(want_value, rel=rel, abs=0)
            assert got[key][name] == want_value, (key, name)
        assert {k: v for k, v in got[key].items() if k not in NUMBERS} == {
            k: v for k, v in row.items() if k not in NUMBERS}



def local_fid_files(folder: Path) -> tuple[Path, Path]:
    """(Inception weights, reference statistics) written to ``folder`` for offline FID runs:
    seeded random Inception weights and made-up statistics (a covariance of rank 16)."""
    weights = folder / "inception.pt"
    torch.save(load_inception(random_weights=True).state_dict(), weights)
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(FEATURE_DIM, 16)) * 0.1
    ref = folder / "ref.npz"
    np.savez(ref, mu=rng.normal(size=FEATURE_DIM), sigma=factor @ factor.T)
    return weights, ref


def local_fid_options(folder: Path) -> list[str]:
    """``--ref-stats`` and ``--inception-weights`` for the files of ``local_fid_files``."""
    weights, ref = local_fid_files(folder)
    return ["--ref-stats", str(ref), "--inception-weights", str(weights)]


def local_cifar10_options(folder: Path) -> list[str]:
    """Options that run the cifar10 dataset from local files only: a tiny random-weight
    EDM-format network at 3 x 32 x 32 and ``local_fid_options``."""
    net, _ = tiny_network(img_resolution=32, label_dim=0, seed=2)
    model = write_edm_pickle(folder / "tiny.pkl", net)
    return ["--model-path", str(model), *local_fid_options(folder)]
