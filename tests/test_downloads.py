"""Downloads: atomic, checked, and a one-line way out when offline; never a half-written file."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from bench.downloads import cached_path, fetch
from bench.errors import UserError
from bench.models.edm import required_downloads
from bench.models.registry import get_dataset

PAYLOAD = bytes(range(256)) * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/missing.bin":
            self.send_error(404)
            return
        self.send_response(200)
        # /truncated.bin promises more bytes than it sends, then hangs up.
        extra = 1000 if self.path == "/truncated.bin" else 0
        self.send_header("Content-Length", str(len(PAYLOAD) + extra))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("PASBENCH_OFFLINE", raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_lands_complete_and_verified(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    got = fetch(f"{server}/file.bin", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]
    dest.write_bytes(b"already here")  # a present file is used as is, not fetched again
    assert fetch(f"{server}/file.bin", dest).read_bytes() == b"already here"


@pytest.mark.parametrize(
    "name, sha, reason",
    [
        ("truncated.bin", None, "closed before the whole file arrived"),
        ("file.bin", "0" * 64, "sha256"),
        ("missing.bin", None, "HTTP 404"),
    ],
)
def test_failed_download_leaves_nothing(server, tmp_path, name, sha, reason):
    dest = tmp_path / name
    with pytest.raises(UserError, match=reason) as err:
        fetch(f"{server}/{name}", dest, sha256=sha)
    assert f"{server}/{name}" in str(err.value) and f"place it at {dest}" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_fails_fast_with_url_and_path(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/edm/model.pkl"
    dest = cached_path(url, tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch(url, dest)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "\n" not in message and url in message and str(dest) in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_offline_switch_refuses_before_touching_the_network(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PASBENCH_OFFLINE", "1")
    with pytest.raises(UserError, match="PASBENCH_OFFLINE"):
        fetch(f"{server}/file.bin", tmp_path / "file.bin")
    assert list(tmp_path.iterdir()) == []


def test_cache_paths_follow_the_url_under_the_cache_folder(tmp_path, monkeypatch):
    url = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz"
    expected = ("downloads", "nvlabs-fi-cdn.nvidia.com", "edm", "fid-refs", "cifar10-32x32.npz")
    assert cached_path(url, tmp_path) == tmp_path.joinpath(*expected)
    monkeypatch.setenv("PASBENCH_CACHE", str(tmp_path / "c"))
    assert cached_path(url) == tmp_path.joinpath("c", *expected)
    monkeypatch.delenv("PASBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cached_path(url) == tmp_path.joinpath("xdg", "pasbench", *expected)
    with pytest.raises(UserError, match="not a downloadable URL"):
        cached_path("https://host.only/")


def test_run_offline_exits_2_naming_url_and_path(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    needed = required_downloads(get_dataset("cifar10"), cache_dir=cache)
    env = {
        **os.environ,
        "PASBENCH_CACHE": str(cache),
        "PASBENCH_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--grid",
        "paper",
        "--datasets",
        "cifar10",
        "--solvers",
        "ddim",
        "--nfe",
        "4",
        "--pas",
        "off",
        "--num-samples",
        "4",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "results"),
    ]
    start = time.monotonic()
    done = subprocess.run(
        command, env=env, capture_output=True, check=False, text=True, timeout=120
    )
    assert time.monotonic() - start < 30
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    # Whichever file the run needs first, the line names its URL and where to put it by hand.
    assert any(url in lines[0] and f"place it at {path}" in lines[0] for url, path, _ in needed), (
        lines[0]
    )
    assert [p for p in cache.rglob("*") if p.is_file()] == []
