"""Numbers do not depend on how seeds are batched, and shards of a grid add up to the grid."""
from __future__ import annotations

import numpy as np
import pytest
from run_helpers import assert_same_numbers, by_hash, read_rows, write_grid

from bench.run import main


@pytest.mark.invariance
def test_batch_size_does_not_change_the_numbers(tmp_path):
    grid = write_grid(tmp_path)
    cache = tmp_path / "cache"
    results = {}
    for batch in (7, 64):
        out = tmp_path / f"out{batch}"
        assert main(["--grid", str(grid), "--out", str(out), "--cache-dir", str(cache),
                     "--batch-size", str(batch), "--quiet"]) == 0
        results[batch] = read_rows(out)
    small, large = by_hash(results[7]), by_hash(results[64])
    assert len(small) == 8  # batch size is not in the hash: the same 8 cells
    assert_same_numbers(small, large)
    # Seed blocks (n mod 10) are the same whatever the batches: the same block values.
    assert {row["blocks"] for row in small.values()} == {10}
    assert {row["batch_size"] for row in results[7]} == {7}


def test_shards_cover_the_grid_once(tmp_path):
    grid = write_grid(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    for shard in ("0/3", "1/3", "2/3"):
        assert main(["--grid", str(grid), "--out", str(out), "--cache-dir", str(cache),
                     "--shard", shard, "--pas", "off", "--quiet"]) == 0
    rows = read_rows(out)
    assert len(list(out.glob("*.jsonl"))) == 3
    assert sorted((r["dataset"], r["solver"]) for r in rows) == sorted(
        (d, s) for d in ("gmm2d", "digits") for s in ("ddim", "dpmpp"))
    # A cell's block values do not depend on which shard ran it, nor on the batch size.
    assert main(["--grid", str(grid), "--out", str(tmp_path / "whole"), "--cache-dir", str(cache),
                 "--pas", "off", "--batch-size", "50", "--quiet"]) == 0
    whole = by_hash(read_rows(tmp_path / "whole"))
    for key, row in by_hash(rows).items():
        assert row["value_blocks"] == pytest.approx(whole[key]["value_blocks"], rel=1e-10, abs=0)
        assert row["value_se"] == pytest.approx(whole[key]["value_se"], rel=1e-8, abs=0)


@pytest.mark.invariance
def test_save_images_writes_every_sample(tmp_path):
    grid = write_grid(tmp_path)
    images = tmp_path / "images"
    assert main(["--grid", str(grid), "--out", str(tmp_path / "out"), "--save-images", str(images),
                 "--solvers", "ddim", "--pas", "off", "--num-samples", "20", "--batch-size", "8",
                 "--quiet"]) == 0
    rows = {row["dataset"]: row for row in read_rows(tmp_path / "out")}
    pngs = sorted(p.name for p in (images / rows["digits"]["config_hash"]).iterdir())
    assert pngs == [f"{seed:06d}.png" for seed in range(20)]
    batches = sorted((images / rows["gmm2d"]["config_hash"]).glob("*.npy"))
    assert [p.name for p in batches] == ["000000-000007.npy", "000008-000015.npy", "000016-000019.npy"]
    points = np.concatenate([np.load(p) for p in batches])
    # The preview is sampled in other batches and stored in float32: one float32 rounding
    # (2**-24 relative) of float64 samples that agree to far below that.
    with np.load(tmp_path / "out" / rows["gmm2d"]["preview"]) as preview:
        np.testing.assert_allclose(preview["samples"][:20], points, rtol=2**-23, atol=0)
