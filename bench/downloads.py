"""Downloads into the pasbench cache: atomic, checked, and with a clear way out when offline.

A file either appears complete at its final path or not at all: bytes go to a temporary file in
the same folder, are checked (length against the server's Content-Length, sha256 where known)
and are then renamed into place. Any failure removes the temporary file and raises a
``UserError`` that names the URL and the exact path where the user can put the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from bench.errors import UserError
from pas.cache import default_cache_dir

OFFLINE_ENV = "PASBENCH_OFFLINE"
# Per socket operation (connect, each read); an unreachable host fails well inside 30 s.
TIMEOUT_S = 15.0
_CHUNK = 1 << 20


def cached_path(url: str, cache_dir: Path | str | None = None) -> Path:
    """Where ``url`` is kept in the cache: ``<cache>/downloads/<host>/<path of the URL>``.

    The cache folder is pas's (``$PASBENCH_CACHE``, else ``$XDG_CACHE_HOME/pasbench``, else
    ``~/.cache/pasbench``), so teacher trajectories and downloads live side by side.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc or not parts.path.strip("/"):
        raise UserError(f"not a downloadable URL: {url}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "downloads" / parts.netloc / Path(*parts.path.strip("/").split("/"))


def is_url(text: str | os.PathLike) -> bool:
    """True for http(s) URLs, False for local paths."""
    return urllib.parse.urlsplit(str(text)).scheme in ("http", "https")


def fetch(
    url: str, dest: Path | str, *, sha256: str | None = None, timeout: float = TIMEOUT_S
) -> Path:
    """``dest``, downloading ``url`` there first if it is not present yet.

    Set ``PASBENCH_OFFLINE=1`` to forbid network access: a missing file then fails at once.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise UserError(_by_hand(url, dest, f"{OFFLINE_ENV} is set"))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(_by_hand(url, dest, f"cannot create the cache folder ({err})")) from None
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _download(url, out, timeout, dest.name)
        if sha256 is not None and digest != sha256.lower():
            raise UserError(
                _by_hand(url, dest, f"sha256 {digest} differs from the expected {sha256}")
            )
        os.replace(tmp, dest)
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as err:
        raise UserError(_by_hand(url, dest, _reason(err))) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _download(url: str, out, timeout: float, label: str) -> str:
    """Stream ``url`` into the open file ``out``; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "pasbench"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        expected = response.length
        written = 0
        # disable=None: a bar on a terminal, nothing in logs and pipes.
        with tqdm(
            total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=None
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if expected is not None and written != expected:
        raise http.client.IncompleteRead(b"", expected - written)
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return "the connection closed before the whole file arrived"
    return str(err) or type(err).__name__


def _by_hand(url: str, dest: Path, reason: str) -> str:
    return f"cannot download {url} ({reason}); download it by hand and place it at {dest}"
