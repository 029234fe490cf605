"""torchrun with two gloo ranks gives the rows one process gives, written once by rank 0."""
from __future__ import annotations

import pytest
from run_helpers import assert_same_numbers, by_hash, read_rows, run_cli, write_grid

from bench.distributed import World, seed_range
from bench.run import main


def test_seed_ranges_partition_the_seeds():
    for num, size in ((10, 3), (2, 4), (7, 1)):
        ranges = [seed_range(num, World(rank, size)) for rank in range(size)]
        assert [s for r in ranges for s in r] == list(range(num))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


@pytest.mark.invariance
def test_two_gloo_ranks_match_one_process(tmp_path):
    grid = write_grid(tmp_path)
    cache = tmp_path / "cache"
    common = ["--grid", str(grid), "--cache-dir", str(cache), "--datasets", "gmm2d", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    single = by_hash(read_rows(tmp_path / "one"))

    # A fresh cache: rank 0 fits PAS while rank 1 waits, then both load the same artifact.
    done = run_cli(*common, "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache2"),
                   module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "bench.run"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path / "two")
    assert len(list((tmp_path / "two").glob("*.jsonl"))) == 1
    assert len(rows) == 4 and {row["world_size"] for row in rows} == {2}
    # Another process with another thread count fits PAS again: the same steps and numbers.
    assert_same_numbers(by_hash(rows), single)


def test_a_rank_without_seeds_adds_nothing(tmp_path):
    """Three ranks, two samples: rank 2 has no seeds, and the metric (moments summed over ranks)
    is the one process's, so only a cell's total sample count has to pass the plan's check."""
    common = ["--datasets", "gmm2d", "--solvers", "ddim", "--nfe", "4", "--pas", "off",
              "--methods", "none",
              "--num-samples", "2", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    done = run_cli(*common, "--out", str(tmp_path / "three"),
                   module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
                           "-m", "bench.run"))
    assert done.returncode == 0, done.stderr[-2000:]
    (single,), (triple,) = read_rows(tmp_path / "one"), read_rows(tmp_path / "three")
    assert triple["world_size"] == 3 and triple["num_samples"] == 2
    assert triple["value"] == pytest.approx(single["value"], rel=1e-12, abs=0)
