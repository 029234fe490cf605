"""The cache folder rule, stable config hashes, and atomic writes."""

from pathlib import Path

import pytest
import torch

from pas.cache import atomic_write, config_hash, default_cache_dir, load_tensors, save_tensors


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PASBENCH_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PASBENCH_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "pasbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pasbench"


def test_config_hash_ignores_key_order_only():
    assert config_hash({"a": 1, "b": [1.5, None]}) == config_hash({"b": [1.5, None], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.0000001})


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    save_tensors({"v": torch.arange(3)}, path)

    def broken(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert torch.equal(load_tensors(path)["v"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_unreadable_entry_loads_as_missing(tmp_path):
    assert load_tensors(tmp_path / "absent.pt") is None
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    assert load_tensors(tmp_path / "bad.pt") is None
