"""Find the first commit where one cell regressed (`python -m bench.bisect GOOD BAD --cell HASH`).

The candidates are the commits on the ancestry path from GOOD (excluded) to BAD (``git rev-list
--ancestry-path``, oldest first). A commit is bad when the cell's metric there is worse than at
GOOD by bench.verdict's rule (past ``--metric-tol`` and ``--z``, the gates of bench.compare and
bench.history); a near miss counts as good. The search halves the candidates; a commit's value
comes from the store when it holds a clean row of the cell at that commit, else the cell alone
is run in a temporary worktree with that commit's code (bench.backfill) and its rows are added
to the store, so a second bisection reuses them. A commit whose code cannot run the cell, or
whose rows hash it differently, is skipped like ``git bisect skip``: the nearest other candidate
is tried.

``--command`` replaces the benchmark (default: bench.run restricted to the cell's dataset,
solver, NFE and PAS setting); ``{dataset}``, ``{solver}``, ``{nfe}``, ``{pas}`` (on/off),
``{grid}``, ``{python}`` and ``{out}`` are filled in. Exit status: 0 when a first bad commit is
found, 1 when BAD is not worse than GOOD or every candidate was skipped, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.backfill import grid_argument, run_at_commit
from bench.commits import ancestry_path, resolve, subjects
from bench.errors import UsageParser, UserError
from bench.results import ensure_writable, load_rows
from bench.verdict import (
    DEFAULT_METRIC_TOL,
    DEFAULT_Z,
    WORSE,
    change_in_se,
    gate_arg,
    judge,
    relative_change,
)

DEFAULT_COMMAND = (
    "{python} -m bench.run --grid {grid} --datasets {dataset} --solvers {solver} "
    "--nfe {nfe} --pas {pas} --out {out} --quiet"
)


@dataclass
class Bisection:
    """One cell's search: where to find or run it, the gates, and what it has run so far."""

    repo: Path
    store: Path
    cell: str
    grid: str
    command: str = DEFAULT_COMMAND
    metric_tol: float = DEFAULT_METRIC_TOL
    z: float = DEFAULT_Z
    runs: list[str] = field(default_factory=list)

    def cell_rows(self) -> pd.DataFrame:
        """Every stored row of the cell, oldest first."""
        rows = load_rows([self.store])
        return rows[rows["config_hash"] == self.cell].sort_values("created_at", kind="stable")

    def stored(self, sha: str) -> pd.Series | None:
        """The newest clean row of the cell at ``sha`` in the store, if any."""
        rows = self.cell_rows()
        mine = rows[(rows["git_sha"] == sha) & rows["git_dirty"].ne(True)]
        return None if mine.empty else mine.iloc[-1]

    def fields(self) -> dict[str, str]:
        """The command's cell fields, from any stored row of the cell."""
        mine = self.cell_rows()
        if mine.empty:
            raise UserError(
                f"no row of cell {self.cell} in {self.store}: run it once first "
                "(bench.run or bench.backfill) so bisect knows what to run"
            )
        row = mine.iloc[-1]
        return {
            "dataset": str(row["dataset"]),
            "solver": str(row["solver"]),
            "nfe": str(row["nfe"]),
            "pas": "on" if row["pas"] else "off",
            "grid": grid_argument(self.grid),
        }

    def row_at(self, sha: str) -> pd.Series | None:
        """The cell's row at ``sha``: stored, else run there (None: the commit cannot give it)."""
        row = self.stored(sha)
        if row is None:
            self.runs.append(sha)
            if run_at_commit(self.repo, sha, self.command, self.fields(), self.store).ok:
                row = self.stored(sha)
        return row

    def worse(self, good: pd.Series, row: pd.Series) -> bool:
        rel = relative_change(good["value"], row["value"])
        score = change_in_se(good["value"], row["value"], good.get("value_se"), row.get("value_se"))
        return judge(rel, score, self.metric_tol, self.z).item() == WORSE


def first_bad(search: Bisection, good: str, bad: str) -> tuple[str | None, list[str]]:
    """The first bad commit between ``good`` and ``bad`` (None if BAD is not worse or every
    candidate was skipped) and the commits skipped on the way."""
    good_sha, bad_sha = resolve(search.repo, good), resolve(search.repo, bad)
    good_row = search.row_at(good_sha)
    if good_row is None:
        raise UserError(f"the cell cannot be measured at GOOD {good}")
    candidates = ancestry_path(search.repo, good_sha, bad_sha)
    if not candidates:
        raise UserError(f"{bad} does not descend from {good}")
    bad_row = search.row_at(bad_sha)
    if bad_row is None or not search.worse(good_row, bad_row):
        return None, []
    low, high = -1, len(candidates) - 1  # candidates[low] is good (-1: GOOD), candidates[high] bad
    skipped: set[int] = set()
    while high - low > 1:
        untried = [index for index in range(low + 1, high) if index not in skipped]
        if not untried:
            break
        middle = min(untried, key=lambda index: abs(index - (low + high) / 2))
        row = search.row_at(candidates[middle])
        if row is None:
            skipped.add(middle)
        elif search.worse(good_row, row):
            high = middle
        else:
            low = middle
        verdict = "skipped" if row is None else "bad" if high == middle else "good"
        print(
            f"{candidates[middle][:8]}: {verdict} ({high - low - 1} candidate(s) left)",
            file=sys.stderr,
        )
    found = candidates[high] if high - low == 1 else None
    return found, [candidates[index] for index in sorted(skipped)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = UsageParser(prog="python -m bench.bisect", description=__doc__.splitlines()[0])
    parser.add_argument("good", help="a commit where the cell was good")
    parser.add_argument("bad", help="a later commit where it is worse")
    parser.add_argument(
        "--cell", required=True, metavar="CONFIG_HASH", help="the cell's config_hash"
    )
    parser.add_argument(
        "--store",
        type=Path,
        required=True,
        metavar="DIR",
        help="store with the cell's rows; rows run here are added to it",
    )
    parser.add_argument(
        "--grid",
        default="smoke",
        metavar="NAME|PATH",
        help="grid the cell comes from (default: smoke)",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="git repository (default: .)")
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="benchmark command (see above)")
    parser.add_argument(
        "--metric-tol",
        type=gate_arg,
        default=DEFAULT_METRIC_TOL,
        metavar="REL",
        help=f"relative tolerance (default {DEFAULT_METRIC_TOL:g})",
    )
    parser.add_argument(
        "--z",
        type=gate_arg,
        default=DEFAULT_Z,
        metavar="Z",
        help=f"combined standard errors (default {DEFAULT_Z:g})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        ensure_writable(args.store)
        search = Bisection(
            args.repo, args.store, args.cell, args.grid, args.command, args.metric_tol, args.z
        )
        found, skipped = first_bad(search, args.good, args.bad)
        names = subjects(args.repo, [found] if found else [])
    except UserError as err:
        print(f"bench.bisect: {err}", file=sys.stderr)
        return 2
    if skipped:
        print(f"skipped (could not measure the cell): {' '.join(sha[:8] for sha in skipped)}")
    print(f"cell runs: {len(search.runs)}")
    if found is None:
        print(
            f"no first bad commit: {args.bad} is not worse than {args.good}, or every "
            "candidate between them was skipped"
        )
        return 1
    print(f"first bad commit: {found} {names.get(found, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
