"""Shared pieces of the bench.run tests: tiny grid files, running the CLI, reading rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

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
            module: tuple[str, ...] = ("-m", "bench.run")) -> subprocess.CompletedProcess:
    """Run ``python -m bench.run ARGS`` (or another module line) in a fresh single-thread process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *module, *args], cwd=REPO, env=full_env, check=False,
                          capture_output=True, text=True, timeout=300)


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


def local_fid_files(folder: Path) -> tuple[Path, Path]:
    """(Inception weights, reference statistics) written to ``folder`` for offline FID runs:
    seeded random Inception weights and made-up statistics (a covariance of rank 16)."""
    from bench.inception import FEATURE_DIM, load_inception  # lazy: torchvision takes a second

    weights = folder / "inception.pt"
    torch.save(load_inception(random_weights=True).state_dict(), weights)
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(FEATURE_DIM, 16)) * 0.1
    ref = folder / "ref.npz"
    np.savez(ref, mu=rng.normal(size=FEATURE_DIM), sigma=factor @ factor.T)
    return weights, ref
