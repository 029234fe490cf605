"""The FID path end to end with local files only: a tiny EDM-format network standing in for the
CIFAR-10 checkpoint, seeded random Inception weights and made-up reference statistics."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from run_helpers import local_cifar10_options, read_rows

from bench.run import main


def test_fid_cell_from_local_checkpoint_files(tmp_path, capsys):
    files = local_cifar10_options(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--grid", "smoke", "--datasets", "cifar10", "--solvers", "dpmpp", "--nfe", "3",
            "--pas", "off", "--num-samples", "6", "--batch-size", "4", *files, "--out", str(out),
            "--cache-dir", str(cache), "--quiet"]

    assert main([*argv, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "cifar10" in plan and "downloads: none" not in plan  # Inception's default file is listed

    assert main(argv) == 0
    (row,) = read_rows(out)
    assert row["dataset"] == "cifar10" and row["metric"] == "fid"
    assert math.isfinite(row["value"]) and row["value"] > 0
    assert row["options"]["thresholding"] is True  # images live in [-1, 1]
    with np.load(out / row["preview"]) as preview:
        assert preview["samples"].shape == (6, 3, 32, 32)
    # The same files under other names are the same model: the row's config_hash stays.
    model = Path(files[1])
    other = tmp_path / "copy.pkl"
    other.write_bytes(model.read_bytes())
    assert main([*argv, "--model-path", str(other)]) == 0
    assert "1 cell(s) skipped" in capsys.readouterr().out
