"""ms_coco end to end through ``python -m bench.run`` with local files only: a tiny random-weight
SD pipeline folder, a made-up captions CSV, random-weight Inception and CLIP, made-up FID
reference statistics; and the bad inputs that must stop a run with one line and nothing written."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch
from run_helpers import read_rows, write_grid
from sd_tiny import write_captions, write_clip, write_pipeline

from bench.metrics.inception import FEATURE_DIM, load_inception
from bench.models.prompts import TEACHER_POOL
from bench.run import FAULT_ENV, main

GRID = """
[grid]
name = "sd-tiny"
datasets = ["ms_coco"]
solvers = ["ddim"]
nfe = [4]
pas = "both"
num_samples = 6
batch_size = 4

[pas]
trajectories = 8
teacher_nfe = 16
epochs = 20

[datasets.ms_coco]
captions = "{captions}"
guidance = 7.5
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-files")
    weights = root / "inception.pt"
    torch.save(load_inception(random_weights=True).state_dict(), weights)
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(FEATURE_DIM, 16)) * 0.1
    np.savez(root / "ref.npz", mu=rng.normal(size=FEATURE_DIM), sigma=factor @ factor.T)
    captions = write_captions(root / "captions.csv", TEACHER_POOL + 100)
    return {
        "model": write_pipeline(root / "pipe"), "clip": write_clip(root / "clip"),
        "captions": captions, "ref": root / "ref.npz", "inception": weights,
        "grid": write_grid(root, GRID.format(captions=captions), "sd.toml"),
    }


def _argv(files, tmp_path, *extra):
    return ["--grid", str(files["grid"]), "--model-path", str(files["model"]),
            "--ref-stats", str(files["ref"]), "--inception-weights", str(files["inception"]),
            "--clip-model", str(files["clip"]), "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]


def test_two_cell_grid_with_pas_runs_scores_and_resumes(files, tmp_path, capsys, monkeypatch):
    argv = _argv(files, tmp_path)
    assert main([*argv, "--dry-run"]) == 0
    assert "cells: 2 selected, 2 to run" in capsys.readouterr().out

    # Interrupted (SIGINT) in the second cell, the PAS one, after its first batch.
    monkeypatch.setenv(FAULT_ENV, "1")
    assert main(argv) == 130
    assert len(read_rows(tmp_path / "out")) == 1
    monkeypatch.delenv(FAULT_ENV)

    assert main([*argv, "--save-images", str(tmp_path / "images")]) == 0
    assert "1 cell(s) skipped" in capsys.readouterr().out
    rows = read_rows(tmp_path / "out")
    saved = sorted((tmp_path / "images" / rows[1]["config_hash"]).iterdir())
    assert [path.name for path in saved] == [f"{n:06d}.png" for n in range(6)]  # decoded images
    assert [row["pas"] for row in rows] == [False, True]
    for row in rows:
        assert row["dataset"] == "ms_coco" and row["metric"] == "fid"
        assert math.isfinite(row["value"]) and row["value"] > 0
        assert 0 <= row["clip_score"] <= 100 and row["clip_score"] > 0
        assert row["nfe"] == 4 and row["unet_evals"] == 8  # guided: one 2B UNet call per step
        assert row["fid_resize"] == "clean"  # as the published MS-COCO statistics were made
    assert rows[1]["pas_params"] is not None and rows[1]["pas_params"] > 0
    assert rows[0]["conditioning"] == {"guidance": 7.5, "prompt": None,
                                       "captions": str(files["captions"])}
    with np.load(tmp_path / "out" / rows[0]["preview"]) as preview:
        assert preview["samples"].shape == (6, 3, 64, 64)  # decoded thumbnails, not latents
        assert -1 <= preview["samples"].min() and preview["samples"].max() <= 1
    artifacts = list((tmp_path / "cache" / "artifacts").glob("*.json"))
    assert len(artifacts) == 1 and f"captions.csv[-{TEACHER_POOL}:]" in artifacts[0].read_text()

    assert main(argv) == 0
    assert "2 cell(s) skipped" in capsys.readouterr().out


def _fails(capsys, argv, tmp_path, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.run: error: ")
    for needle in needles:
        assert needle in err[0]
    assert not list((tmp_path / "out").glob("*.jsonl"))
    return err[0]


def test_ms_coco_without_the_extra_names_the_install_command(files, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    _fails(capsys, _argv(files, tmp_path, "--pas", "off"), tmp_path, "pip install -e '.[sd]'")


def test_offline_without_the_model_says_what_to_place_where(files, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    argv = _argv(files, tmp_path, "--pas", "off")
    argv = argv[:2] + argv[4:]  # drop --model-path: the default Hub repository is not cached
    line = _fails(capsys, argv, tmp_path, "stable-diffusion-v1-5/stable-diffusion-v1-5",
                  str(tmp_path / "cache" / "huggingface"), "PASBENCH_OFFLINE")
    assert "--model-path" in line


@pytest.mark.parametrize("count, pas, needle", [
    (5, "off", "6 samples need as many captions"),
    (TEACHER_POOL + 3, "both", "PAS's teacher captions"),
])
def test_too_few_captions_stop_the_plan(files, tmp_path, capsys, count, pas, needle):
    captions = write_captions(tmp_path / "few.csv", count)
    _fails(capsys, _argv(files, tmp_path, "--pas", pas, "--captions", str(captions)), tmp_path,
           needle)


def test_offline_default_reference_says_what_to_place_where(files, tmp_path, capsys,
                                                           monkeypatch):
    """Without --ref-stats, ms_coco's published statistics are downloaded; offline, the run stops
    there with the URL and the cache path to put the file at."""
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    argv = _argv(files, tmp_path, "--pas", "off")
    at = argv.index("--ref-stats")
    place = (tmp_path / "cache" / "downloads" / "github.com" / "boomb0om" / "text2image-benchmark"
             / "releases" / "download" / "v0.0.1" / "MS-COCO_val2014_fid_stats.npz")
    _fails(capsys, argv[:at] + argv[at + 2:], tmp_path, "cannot download", f"place it at {place}",
           "text2image-benchmark/releases/download/v0.0.1/MS-COCO_val2014_fid_stats.npz")
