"""PAS in bounded memory: the streamed fit does not depend on its chunk size, cleans up its
scratch file, and the memory model the dry run prints matches a measured fit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pas
import pas.adaptive
from bench.models.registry import get_dataset
from pas.memory import fit_memory, rss_anon

F64 = torch.float64
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits").build(dtype=F64)


@pytest.mark.parametrize("solver, settings", [
    ("ddim", {}), ("ipndm", {}), ("unipc", {"loss": "pseudo_huber"}), ("dpmpp", {"loss": "L2"}),
    ("ddim", {"optimizer": "adam", "epochs": 100, "lr": 0.1}),
])
def test_chunked_fit_equals_the_fit_in_one_chunk(digits, tmp_path, solver, settings):
    """Chunks of 32 against one chunk of all 400 trajectories (and of the 100 held out): the same
    accepted and kept steps, coordinates within 1e-6 relative, losses within 1e-9."""
    fits = [pas.fit(digits, solver, 6, trajectories=400, dtype=F64, cache_dir=tmp_path,
                    progress=False, chunk=chunk, **settings) for chunk in (32, 400)]
    chunked, whole = fits
    assert (chunked.chunk, whole.chunk) == (32, 400)
    assert sorted(chunked.corrected) == sorted(whole.corrected)
    assert chunked.validation["kept"] == whole.validation["kept"]
    for a, b in zip(chunked.search, whole.search, strict=True):
        assert (a.index, a.n_coords, a.accepted) == (b.index, b.n_coords, b.accepted)
        assert torch.allclose(torch.tensor(a.coords), torch.tensor(b.coords), rtol=1e-6, atol=0)
        assert a.loss_before == pytest.approx(b.loss_before, rel=1e-9)
        assert a.loss_after == pytest.approx(b.loss_after, rel=1e-9)
    assert any(s.accepted for s in whole.search)
    assert not any((tmp_path / "scratch").iterdir())


def test_scratch_file_is_deleted_when_the_fit_fails(digits, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("optimiser failed")

    monkeypatch.setattr(pas.adaptive, "fit_coords", broken)
    with pytest.raises(RuntimeError, match="optimiser failed"):
        pas.fit(digits, "ddim", 4, trajectories=100, dtype=F64, cache_dir=tmp_path,
                progress=False, chunk=16)
    assert list((tmp_path / "scratch").iterdir()) == []


def test_fit_without_room_for_its_scratch_fails_before_starting(digits, tmp_path, monkeypatch):
    # 400 trajectories x 64 values x 8 bytes x (x_T, x, 4 used, offset, 4 vectors) = 2.1 MiB.
    monkeypatch.setattr("pas.stream.free_bytes", lambda folder: 2 << 20)
    with pytest.raises(ValueError, match=r"needs 0\.0 GiB of scratch in .*, but only 0\.0 GiB"):
        pas.fit(digits, "ddim", 4, trajectories=400, dtype=F64, cache_dir=tmp_path,
                progress=False)
    assert list((tmp_path / "scratch").iterdir()) == []


_MEASURE = """
import json, sys, torch
import pas
from mixture import mixture
shape, trajectories, chunk = json.loads(sys.argv[1])
art = pas.fit(mixture(tuple(shape)), "ddim", 4, trajectories=trajectories, teacher_nfe=8,
              cache_dir=sys.argv[2], progress=False, chunk=chunk, batch_size=64)
print(json.dumps(art.memory))
"""


@pytest.mark.skipif(rss_anon() is None, reason="RssAnon is read from /proc/self/status (Linux)")
@pytest.mark.parametrize("trajectories, chunk", [(256, 64), (512, 256)])
def test_memory_model_matches_a_measured_fit(tmp_path, trajectories, chunk):
    """The dry run's host figure against the peak RssAnon of a fit on the CPU (3x32x32 mixture,
    ddim NFE 4), within 25%. The fit runs in a fresh process whose malloc returns every buffer
    above 128 KiB to the system when freed (glibc keeps freed buffers below its dynamic mmap
    threshold, up to 32 MiB, so RssAnon would count memory the fit has already released)."""
    shape = (3, 32, 32)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps([shape, trajectories, chunk]), str(tmp_path)],
        env=env, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.splitlines()[-1])
    measured = record["host_rss_anon_peak"] - record["host_rss_anon_start"]
    held_out = pas.adaptive.holdout_count(trajectories, 0.1)
    model = fit_memory(shape, trajectories, held_out, 4, 4, 4, chunk, "cpu")
    assert model.host == model.device + (20 << 20)
    assert measured == pytest.approx(model.host, rel=0.25), (measured / 2**20, model.host / 2**20)
