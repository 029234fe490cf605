"""Temporary git repositories for the history, backfill and bisect tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in (
        ("user.email", "test@example.com"),
        ("user.name", "Test"),
        ("commit.gpgsign", "false"),
    ):
        git(path, "config", key, value)
    return path


def commit(repo: Path, message: str, files: dict[str, str] | None = None) -> str:
    """Write ``files`` (path -> text), commit everything, return the new commit's hash."""
    for name, text in (files or {}).items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def linear_repo(path: Path, count: int) -> tuple[Path, list[str]]:
    """A repository with ``count`` commits "commit 0" .. on one branch; oldest first."""
    repo = init_repo(path)
    return repo, [commit(repo, f"commit {index}") for index in range(count)]
