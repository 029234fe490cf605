"""The PAS teacher cache on disk: solves in parts, a free-disk check, superseded and finished
solves deleted (unless kept), and the dry run's figures."""
from __future__ import annotations

import re
from collections import namedtuple

import pytest
import torch
from run_helpers import write_grid

import pas
import pas.teacher
from bench.models.registry import get_dataset
from bench.run import main
from pas.teacher import TEACHER_SEED_START, split_requests, states_bytes, teacher_states

F64 = torch.float64
SEEDS = range(TEACHER_SEED_START, TEACHER_SEED_START + 20)


@pytest.fixture(scope="module")
def gmm():
    return get_dataset("gmm2d").build(dtype=F64)


def _request(den, nfe, schedule):
    return pas.student_request(den, "ddim", nfe, schedule=schedule, teacher_nfe=20)


def _solves(cache):
    return sorted(p for p in (cache / "teacher").glob("*/*") if not p.name.startswith("."))


def _times(requests):
    return len({round(t, 12) for r in requests for t in r.times.tolist()})


def test_split_requests_cuts_consecutive_parts_under_the_limit(gmm):
    requests = [_request(gmm, n, s) for s in ("polynomial", "logsnr") for n in (4, 5)]
    # Each schedule's two grids share their end points only: 5 + 6 - 2 = 9 times; all: 16.
    assert [_times([r]) for r in requests] == [5, 6, 5, 6]
    assert _times(requests[:2]) == _times(requests[2:]) == 9 and _times(requests) == 16
    assert split_requests(requests, 16) == [[0, 1, 2, 3]]
    assert split_requests(requests, 15) == [[0, 1, 2], [3]]  # 9 + 5 - 2 = 12 times, then 6
    assert split_requests(requests, 11) == [[0, 1], [2, 3]]
    assert split_requests(requests, 9) == [[0, 1], [2, 3]]
    assert split_requests(requests, 8) == [[0], [1], [2], [3]]
    assert split_requests(requests, 1) == [[0], [1], [2], [3]]  # too big alone: a part each
    assert states_bytes(10, 20, (2,), F64) == 10 * 20 * 2 * 8


def test_a_solve_needs_free_disk_for_its_states(gmm, tmp_path, monkeypatch):
    request = _request(gmm, 4, "polynomial")
    needed = states_bytes(5, len(SEEDS), (2,), F64)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(pas.teacher.shutil, "disk_usage", lambda path: usage(0, 0, needed - 1))
    with pytest.raises(ValueError, match=r"not enough free disk for the teacher's states: 0\.0 GiB "
                                         r"needed, 0\.0 GiB free in .*--cache-dir"):
        teacher_states(gmm, [request], seeds=SEEDS, dtype=F64, cache_dir=tmp_path, progress=False)
    assert _solves(tmp_path) == [] and not list((tmp_path / "teacher").rglob(".solving-*"))
    monkeypatch.setattr(pas.teacher.shutil, "disk_usage", lambda path: usage(0, 0, needed))
    teacher_states(gmm, [request], seeds=SEEDS, dtype=F64, cache_dir=tmp_path, progress=False)
    assert len(_solves(tmp_path)) == 1


def test_a_new_solve_deletes_the_solves_it_supersedes(gmm, tmp_path):
    poly, logsnr = _request(gmm, 4, "polynomial"), _request(gmm, 4, "logsnr")
    solve = {"dtype": F64, "cache_dir": tmp_path, "progress": False}
    first = teacher_states(gmm, [poly], seeds=SEEDS[:10], **solve)
    # More seeds on the same grid serve all the first one did: it goes.
    more = teacher_states(gmm, [poly], seeds=SEEDS, **solve)
    assert _solves(tmp_path) == [more.folder] and not first.folder.exists()
    # Another schedule's times: the stored solve does not serve them, and the new one does not
    # serve the polynomial fit's (its times are not among them), so both stay.
    other = teacher_states(gmm, [logsnr], seeds=SEEDS, **solve)
    assert not other.cached and sorted(_solves(tmp_path)) == sorted([more.folder, other.folder])
    assert more.serves(poly) and not more.serves(logsnr) and other.serves(logsnr)
    other.remove()
    assert _solves(tmp_path) == [more.folder]
    # Without pruning (other processes may be reading), the superseded solve stays.
    kept = {**solve, "cache_dir": tmp_path / "kept"}
    few = teacher_states(gmm, [poly], seeds=SEEDS[:10], **kept)
    teacher_states(gmm, [poly], seeds=SEEDS, prune=False, **kept)
    assert few.folder in _solves(tmp_path / "kept") and len(_solves(tmp_path / "kept")) == 2


GRID = """
[grid]
name = "teacher-disk"
datasets = ["gmm2d"]
solvers = ["ddim", "dpmpp"]
nfe = [4]
pas = "on"
num_samples = 50
batch_size = 64
dtype = "float64"

[pas]
trajectories = 40
teacher_nfe = 20
epochs = 10
"""


def test_solves_in_parts_are_deleted_once_their_fits_are_stored(tmp_path, capsys):
    """A teacher disk of 1 KiB cannot hold both fits' times (ddim on polynomial, dpmpp on
    logsnr): the dry run plans two solves, the run makes them one after the other and deletes
    each once its fit is stored, unless --keep-teacher."""
    grid = write_grid(tmp_path, GRID, "disk.toml")

    def run(name, *extra):
        cache = tmp_path / name
        argv = ["--grid", str(grid), "--cache-dir", str(cache), "--teacher-disk", str(2**-20),
                "--out", str(tmp_path / f"{name}-out"), "--quiet", *extra]
        assert main(argv) == 0
        return cache

    run("dry", "--dry-run")
    dry = capsys.readouterr().out
    seeds = 40 + 10  # the held-out seeds: max(10, 0.1 x 40)
    size = states_bytes(5, seeds, (2,), F64) / 2**30  # each part keeps its fit's 5 times
    parts = [x for x in dry.splitlines() if x.startswith("PAS teacher for gmm2d (part")]
    assert [x.split(":")[0] for x in parts] == [f"PAS teacher for gmm2d (part {i} of 2)"
                                               for i in (1, 2)]
    assert f"PAS teacher cache for gmm2d: {size:,.1f} GiB on disk at most (2 solve(s)" in dry
    assert dry.count("PAS teacher cache on disk for the plan: ") == 1
    kept = run("kept", "--keep-teacher")
    assert len(_solves(kept)) == 2 and len(list((kept / "artifacts").glob("*.json"))) == 2
    deleted = run("deleted")
    assert _solves(deleted) == [] and len(list((deleted / "artifacts").glob("*.json"))) == 2


def test_short_disk_stops_the_run_with_one_line(tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(pas.teacher.shutil, "disk_usage", lambda path: usage(0, 0, 1000))
    grid, out = write_grid(tmp_path, GRID, "disk.toml"), tmp_path / "out"
    assert main(["--grid", str(grid), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"bench\.run: error: PAS teacher for gmm2d: not enough free disk for the "
                        r"teacher's states: .* GiB free in .*", line)
    assert not list(out.glob("*.jsonl"))
