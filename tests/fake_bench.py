"""Test helpers: temporary repositories whose commits hold a tiny fake benchmark instead of the
runner, so that backfill and bisect run real worktrees and subprocesses in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

from git_helpers import commit, init_repo
from store_factory import make_row

# Runs in a worktree: logs the run, then writes one row naming the worktree's commit with the
# value in value.txt (a value that is not a number fails the run, as broken code would).
SCRIPT = """\
import json, os, pathlib, subprocess, sys
out = pathlib.Path(sys.argv[1])
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
sha = head.stdout.strip()
with open(os.environ["FAKE_RUN_LOG"], "a") as log:
    log.write(sha + "\\n")
row = json.loads(pathlib.Path("row.json").read_text())
row.update(git_sha=sha, git_dirty=False, value=float(pathlib.Path("value.txt").read_text()))
(out / f"run-{sha[:8]}.jsonl").write_text(json.dumps(row) + "\\n")
"""
COMMAND = "{python} fake_bench.py {out}"
CELL = ("gmm2d", "ddim", 4, False)


def fake_repo(path: Path, values: list[str], value_se: float = 0.01) -> tuple[Path, str, list[str]]:
    """A base commit with the fake benchmark, then one commit per value; returns the repository,
    the base commit and the value commits (oldest first)."""
    repo = init_repo(path)
    row = make_row(*CELL, value_se=value_se)
    base = commit(repo, "fake benchmark", {"fake_bench.py": SCRIPT, "row.json": json.dumps(row)})
    shas = [commit(repo, f"value {value}", {"value.txt": value}) for value in values]
    return repo, base, shas


def run_log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []
