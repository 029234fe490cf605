"""Build small synthetic result stores (ROW SCHEMA of the runner) for report and compare tests.

Metric values follow a closed form so tests can assert exact table entries:
base value = SOLVER_SCALE[solver] * 10 / nfe, PAS value = PAS_FACTOR[solver] * base value.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

SOLVER_SCALE = {"ddim": 3.0, "ipndm": 2.0, "my_solver": 2.5}
PAS_FACTOR = {"ddim": 0.5, "ipndm": 0.8, "my_solver": 1.1}
NFES = (4, 6, 10)
PREVIEW = 64
SHAPES = {"gmm2d": (2,), "digits": (1, 8, 8)}


def base_value(solver: str, nfe: int) -> float:
    return SOLVER_SCALE[solver] * 10 / nfe


def cell_value(solver: str, nfe: int, pas: bool) -> float:
    return base_value(solver, nfe) * (PAS_FACTOR[solver] if pas else 1.0)


def pas_steps(nfe: int) -> list[int]:
    return [0, 1] if nfe <= 4 else [0, 1, nfe - 2]


def make_row(dataset: str, solver: str, nfe: int, pas: bool, **overrides: object) -> dict:
    """One row with every ROW SCHEMA field; ``overrides`` replace fields after hashing."""
    settings = {"dataset": dataset, "solver": solver, "nfe": nfe, "pas": pas, "num_samples": 1000}
    row = {
        "run_id": "run-a",
        "created_at": "2025-03-01T12:00:00+00:00",
        "git_sha": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": False,
        "host": "testhost",
        "device": "cpu",
        "torch_version": "2.14.0",
        "package_version": "0.1.0",
        "grid": "smoke",
        "dataset": dataset,
        "solver": solver,
        "nfe": nfe,
        "schedule": "polynomial",
        "order": None if solver == "ddim" else 4,
        "options": {},
        "pas": pas,
        "pas_params": 4 * len(pas_steps(nfe)) if pas else None,
        "pas_steps": pas_steps(nfe) if pas else None,
        "pas_fit_s": 1.5 if pas else 0.0,
        "teacher_s": 3.0 if pas else 0.0,
        "pas_settings": {"k": 4, "loss": "L1"} if pas else None,
        "num_samples": 1000,
        "seeds": "0-999",
        "batch_size": 500,
        "world_size": 1,
        "dtype": "float64",
        "precision": "float64",
        "metric": "fd",
        "value": cell_value(solver, nfe, pas),
        "rmse_to_teacher": None,
        "sample_s": nfe * 0.01,
        "s_per_sample": nfe * 1e-5,
        "metric_s": 0.01,
        "peak_mem_mb": 10.0,
        "preview": None,
        "config_hash": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16],
    }
    row.update(overrides)
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _preview(dataset: str, nfe: int, pas: bool) -> dict[str, np.ndarray]:
    """Previews from the same latents for base and PAS; PAS ends nearer the teacher."""
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((PREVIEW, *SHAPES[dataset]))
    if dataset != "gmm2d":
        error = 0.5 / nfe * (0.3 if pas else 1.0)
        target = np.tanh(latents)
        return {"samples": np.clip(target + error * latents, -1, 1).astype(np.float32)}
    angles = rng.integers(0, 8, PREVIEW) * np.pi / 4
    ends = np.stack([np.cos(angles), np.sin(angles)], axis=1) + 0.1 * rng.standard_normal((PREVIEW, 2))
    times = 80.0 * np.linspace(1, 0, nfe + 1)[:, None, None] ** 3
    teacher_times = 80.0 * np.linspace(1, 0, 101)[:, None, None] ** 3
    offset = (0.05 if pas else 0.3) * latents
    return {
        "samples": (ends + offset).astype(np.float32),
        "trajectory": (ends + offset + times * latents).astype(np.float32),
        "teacher": (ends + teacher_times * latents).astype(np.float32),
    }


def build_store(folder: Path, datasets: tuple[str, ...] = ("gmm2d", "digits")) -> Path:
    """Write one run file with every (dataset, solver, nfe, pas) cell and previews; return it."""
    rows = []
    for dataset in datasets:
        for solver in SOLVER_SCALE:
            for nfe in NFES:
                for pas in (False, True):
                    name = f"previews/{dataset}-{solver}-{nfe}-{'pas' if pas else 'base'}.npz"
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    np.savez(folder / name, **_preview(dataset, nfe, pas))
                    rows.append(make_row(dataset, solver, nfe, pas, preview=name))
    return write_rows(folder / "run-a.jsonl", rows)
