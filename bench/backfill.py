"""Run a grid on each commit of a range, with its code, into one store (`python -m bench.backfill`).

``python -m bench.backfill A..B --grid smoke --store results/history/smoke`` lists the commits
reachable from B and not from A (oldest first, ``git rev-list --topo-order``), and for each one
not yet done checks it out in a temporary git worktree (``git worktree add --detach``), runs the
grid there with that commit's own code into a temporary folder, and moves the run file into the
store only when the run succeeded. So:

- a commit with rows in the store is skipped: rerunning the same command after an interruption
  (Ctrl-C, a crash, a reboot) continues with the first unfinished commit, and a commit cut off
  half-way is run again whole;
- a commit whose code cannot run the grid (non-zero exit, or no rows naming the commit) is
  recorded in ``STORE/failed/<sha>.log`` (the command and the end of its output) and skipped,
  now and on later runs (delete the file to try it again); the backfill goes on.

``--command`` replaces the benchmark command (default ``{python} -m bench.run --grid {grid} --out
{out} --quiet``), with ``{python}`` this interpreter, ``{grid}`` the ``--grid`` value (a file path
made absolute) and ``{out}`` the temporary folder it must write ``*.jsonl`` rows to; it runs in
the worktree. Exit status: 0 when every commit is stored or recorded as failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.commits import commit_range, subjects, worktree
from bench.errors import UsageParser, UserError
from bench.results import ensure_writable, load_rows, replace_atomically

DEFAULT_COMMAND = "{python} -m bench.run --grid {grid} --out {out} --quiet"
FAILED = "failed"
# Lines of a failing command's output kept in its failure record.
LOG_TAIL = 40


@dataclass(frozen=True)
class Outcome:
    """What running the benchmark at one commit gave: ok, or why not (the log tail)."""

    ok: bool
    log: str = ""


def stored_commits(store: Path) -> set[str]:
    """Commits with clean (not dirty) rows in ``store``."""
    if not store.is_dir():
        return set()
    rows = load_rows([store])
    return set(rows.loc[rows["git_dirty"].ne(True), "git_sha"])


def failed_commits(store: Path) -> set[str]:
    return {path.stem for path in (store / FAILED).glob("*.log")}


def record_failure(store: Path, sha: str, log: str) -> Path:
    """Write the failure record (whole or not at all)."""
    path = store / FAILED / f"{sha}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, log.encode())
    return path


def grid_argument(grid: str) -> str:
    """A grid file path made absolute (the command runs in a worktree); a grid name as it is."""
    return str(Path(grid).resolve()) if Path(grid).is_file() else grid


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_TAIL:])


def _move_rows(out: Path, store: Path, sha: str) -> bool:
    """Move the run files (and their previews) from ``out`` into ``store`` if they name ``sha``."""
    files = sorted(out.glob("*.jsonl"))
    if not files or sha not in set(load_rows(files)["git_sha"]):
        return False
    for path in files:
        previews = path.with_suffix(".previews")
        if previews.is_dir():
            shutil.move(previews, store / previews.name)
        # The run file last: once it is in the store, the commit counts as done.
        shutil.move(path, store / path.name)
    return True


def run_at_commit(
    repo: Path, sha: str, command: str, fields: Mapping[str, str], store: Path
) -> Outcome:
    """Run ``command`` (a template over ``fields`` plus ``out``) in a worktree at ``sha`` and
    move its rows into ``store`` if it succeeded."""
    with worktree(repo, sha) as tree, tempfile.TemporaryDirectory(prefix="pasbench-out-") as out:
        argv = [
            part.format(python=sys.executable, out=out, **fields) for part in shlex.split(command)
        ]
        try:
            done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=False)
        except OSError as err:
            return Outcome(False, f"$ {shlex.join(argv)}\n{err}")
        output = _tail(done.stdout + done.stderr)
        log = f"$ {shlex.join(argv)}\nexit status {done.returncode}\n{output}"
        if done.returncode != 0:
            return Outcome(False, log)
        if not _move_rows(Path(out), store, sha):
            return Outcome(False, log + "\nno result rows naming this commit")
        return Outcome(True)


def backfill(
    repo: Path, spec: str, grid: str, store: Path, command: str = DEFAULT_COMMAND
) -> dict[str, str]:
    """Run the grid on every commit of ``spec`` not yet stored or failed; returns sha -> status
    (stored, failed, skipped: stored, skipped: failed) and prints one progress line per commit."""
    ensure_writable(store)
    commits = commit_range(repo, spec)
    if not commits:
        raise UserError(f"no commits in {spec}")
    names = subjects(repo, commits)
    status: dict[str, str] = {}
    # Read once: the loop only adds the commit it runs, and each commit comes once.
    stored, failed = stored_commits(store), failed_commits(store)
    for index, sha in enumerate(commits, start=1):
        label = f"[{index}/{len(commits)}] {sha[:8]} {names.get(sha, '')[:60]}"
        if sha in stored or sha in failed:
            status[sha] = "skipped: " + ("stored" if sha in stored else "failed")
            print(f"{label}: {status[sha]}", file=sys.stderr)
            continue
        started = time.monotonic()
        outcome = run_at_commit(repo, sha, command, {"grid": grid_argument(grid)}, store)
        if outcome.ok:
            status[sha] = "stored"
        else:
            status[sha] = FAILED
            record_failure(store, sha, outcome.log)
        print(f"{label}: {status[sha]} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return status


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = UsageParser(prog="python -m bench.backfill", description=__doc__.splitlines()[0])
    parser.add_argument(
        "range", metavar="A..B", help="commits to run: A..B (B's ancestors not in A) or one commit"
    )
    parser.add_argument(
        "--grid", default="smoke", metavar="NAME|PATH", help="grid to run (default: smoke)"
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        metavar="DIR",
        help="store every commit's rows here (default: results/history/<grid name>)",
    )
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="git repository (default: the current folder)"
    )
    parser.add_argument(
        "--command",
        default=DEFAULT_COMMAND,
        help=f"benchmark command run in each worktree (default: {DEFAULT_COMMAND!r})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        store = args.store or Path("results/history") / Path(args.grid).stem
        status = backfill(args.repo, args.range, args.grid, store, args.command)
    except UserError as err:
        print(f"bench.backfill: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "bench.backfill: interrupted; the same command continues where this one stopped",
            file=sys.stderr,
        )
        return 130
    counts = Counter(status.values())
    print(
        f"{len(status)} commit(s) in {store}: "
        + ", ".join(f"{n} {name}" for name, n in counts.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
