"""The results store: atomic appends, config-hash lookup, loading into pandas."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench import results
from bench.errors import UserError
from bench.results import ROW_KEYS, RunFile, ensure_writable, existing_hashes, load_rows


def _row(config_hash: str, value: float = 1.5) -> dict:
    row = {key: None for key in ROW_KEYS}
    row.update(config_hash=config_hash, value=value, dataset="gmm2d", pas=False, nfe=5)
    return row


def test_append_writes_complete_lines_in_order(tmp_path):
    store = RunFile(tmp_path, "run-a")
    store.append(_row("h1", 1.0))
    store.append(_row("h2", 2.0))
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["config_hash"] for line in lines] == ["h1", "h2"]
    assert list(json.loads(lines[0])) == list(ROW_KEYS)
    assert store.path.read_bytes().endswith(b"\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-a.jsonl"]  # no temp files left


def test_append_rejects_incomplete_rows(tmp_path):
    row = _row("h1")
    del row["value"]
    with pytest.raises(ValueError, match="value"):
        RunFile(tmp_path, "run-a").append(row)
    assert not (tmp_path / "run-a.jsonl").exists()


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    store = RunFile(tmp_path, "run-a")
    store.append(_row("h1"))
    before = store.path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.append(_row("h2"))
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-a.jsonl"]


def test_existing_hashes_and_load_rows_span_runs(tmp_path):
    RunFile(tmp_path, "run-a").append(_row("h1", 1.0))
    second = RunFile(tmp_path, "run-b")
    second.append(_row("h2", 2.0))
    second.append(_row("h3", 3.0))
    assert existing_hashes(tmp_path) == {"h1", "h2", "h3"}
    assert existing_hashes(tmp_path / "missing") == set()
    frame = load_rows([tmp_path])
    assert list(frame["config_hash"]) == ["h1", "h2", "h3"]
    assert list(frame["value"]) == [1.0, 2.0, 3.0]
    assert list(frame.columns[: len(ROW_KEYS)]) == list(ROW_KEYS)
    assert frame["source_file"].iloc[0].endswith("run-a.jsonl")
    assert len(load_rows([second.path])) == 2
    assert load_rows([]).empty


def test_corrupt_row_is_a_user_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"config_hash": "h1"}\n{"config_hash": \n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        existing_hashes(tmp_path)


def test_preview_is_saved_relative_to_the_run_file(tmp_path):
    store = RunFile(tmp_path, "run-a")
    name = store.save_preview("abc", {"samples": np.ones((4, 2), dtype=np.float32)})
    assert name == "run-a.previews/abc.npz"
    with np.load(tmp_path / name) as data:
        np.testing.assert_array_equal(data["samples"], np.ones((4, 2)))


def test_ensure_writable(tmp_path):
    ensure_writable(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write"):
        ensure_writable(blocker / "sub")


def test_provenance_fields():
    info = results.provenance()
    assert set(info) == {"git_sha", "git_dirty", "host", "torch_version", "package_version"}
    assert isinstance(info["git_dirty"], bool)
    run_id = results.new_run_id()
    assert run_id[:8].isdigit() and run_id != results.new_run_id()
    assert os.sep not in run_id
