"""Git plumbing for bench.history, bench.backfill and bench.bisect: commit order, subjects,
ranges, and temporary worktrees holding one commit's code."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import UserError


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    """Run git in ``repo``; a failure is a UserError naming the command and git's message."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as err:
        raise UserError(f"cannot run git: {err}") from None
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise UserError(f"git {' '.join(args[:2])}: {message}")
    return done.stdout


def is_repository(repo: Path) -> bool:
    try:
        return git(repo, "rev-parse", "--git-dir") != ""
    except UserError:
        return False


def known_commits(repo: Path, shas: Iterable[str]) -> set[str]:
    """The given full hashes that name commits of ``repo``."""
    wanted = sorted({sha for sha in shas if isinstance(sha, str) and sha})
    if not wanted or not is_repository(repo):
        return set()
    lines = git(
        repo,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        stdin="\n".join(wanted) + "\n",
    ).splitlines()
    return {line.split()[0] for line in lines if line.endswith(" commit")}


def topo_order(repo: Path, shas: Iterable[str]) -> list[str]:
    """The known commits among ``shas``, parents before children (``rev-list --topo-order``)."""
    known = known_commits(repo, shas)
    if not known:
        return []
    listed = git(repo, "rev-list", "--topo-order", "--reverse", *sorted(known)).split()
    return [sha for sha in listed if sha in known]


def subjects(repo: Path, shas: Iterable[str]) -> dict[str, str]:
    """Subject line of every known commit among ``shas``."""
    known = sorted(known_commits(repo, shas))
    if not known:
        return {}
    text = git(repo, "log", "--no-walk=unsorted", "--format=%H%x09%s", *known)
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def resolve(repo: Path, name: str) -> str:
    """The full hash of a commit name (hash, branch, tag, HEAD~3)."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").strip()
    except UserError:
        raise UserError(f"no commit {name!r} in {repo}") from None


def commit_range(repo: Path, spec: str) -> list[str]:
    """Commits of ``A..B`` (reachable from B, not from A; oldest first, parents before children),
    or the single commit a plain name gives."""
    if ".." not in spec:
        return [resolve(repo, spec)]
    return git(repo, "rev-list", "--topo-order", "--reverse", spec).split()


def ancestry_path(repo: Path, good: str, bad: str) -> list[str]:
    """Commits on a path from ``good`` (excluded) to ``bad`` (included), oldest first."""
    return git(
        repo, "rev-list", "--ancestry-path", "--topo-order", "--reverse", f"{good}..{bad}"
    ).split()


@contextmanager
def worktree(repo: Path, sha: str) -> Iterator[Path]:
    """A temporary detached worktree of ``repo`` at ``sha``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pasbench-wt-") as parent:
        path = Path(parent) / sha[:12]
        git(repo, "worktree", "add", "--detach", "--quiet", str(path), sha)
        try:
            yield path
        finally:
            git(repo, "worktree", "remove", "--force", str(path))
