"""Every cell's metric and wall-clock over commits, with its steps (`python -m bench.history`).

Reads rows from stores and run files, places each row at a commit point and groups them into
series:

- **Commit points.** A row's point is its ``git_sha``, and a row with ``git_dirty`` is a point of
  its own right after that commit. Points are ordered by the repository's ``git rev-list
  --topo-order`` (``--repo``, default the current folder): parents before children, a branch's
  commits kept together. A commit the repository does not know (another clone, ``unknown``) is
  placed by its first run time, right after the latest-ordered known commit run before it.
- **Series.** One metric series per cell (``config_hash``): ``value`` +- ``value_se``. One
  wall-clock series per cell, host and device: ``s_per_sample`` +- ``s_per_sample_se``. Several
  rows at one point: the newest counts.
- **Steps.** bench.steps finds change points (ruptures' binary segmentation, each point
  weighted by its stored SE) and judges each
  with bench.verdict's rule, the one bench.compare uses: metric steps against ``--metric-tol`` and
  ``--z``, wall-clock steps against ``--time-tol`` and ``--z``. Rows marked ``timing_suspect`` are
  kept (the trend page draws them) but never used to detect a step.

Prints one line per detected regression or improvement: the cell, the first commit of the step
(short hash and subject), the levels before and after, its relative size and its size in
combined SEs. ``--out FILE.json`` stores the commits, points and steps for ``python -m report
--history FILE.json``. Exit status: 1 with ``--fail-on-regression`` when the newest commit point
starts a regression; 2 on bad input; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.commits import subjects, topo_order
from bench.errors import UsageParser, UserError
from bench.results import read_store, replace_atomically
from bench.steps import detect
from bench.verdict import DEFAULT_METRIC_TOL, DEFAULT_Z, WORSE, gate_arg

# Wall-clock changes under 5% are not reported, however many SEs they are.
DEFAULT_TIME_TOL = 0.05
CELL = ["dataset", "solver", "nfe", "method", "metric"]
POINT_KEY = ["git_sha", "dirty"]


@dataclass(frozen=True)
class Gates:
    """The verdict's gates: relative tolerances for metric and time, and z."""

    metric_tol: float = DEFAULT_METRIC_TOL
    time_tol: float = DEFAULT_TIME_TOL
    z: float = DEFAULT_Z


@dataclass(frozen=True)
class History:
    """Commit points in order, the series' points, and the detected steps."""

    commits: pd.DataFrame
    points: pd.DataFrame
    steps: pd.DataFrame
    gates: Gates

    @property
    def newest_regressions(self) -> pd.DataFrame:
        """Regressions whose first commit point is the newest one."""
        newest = self.commits["position"].max()
        return self.steps[(self.steps["verdict"] == WORSE) & (self.steps["position"] == newest)]

    def to_json(self) -> str:
        """Everything the trend page needs (``python -m report --history``)."""

        def records(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records", date_format="iso"))

        return json.dumps(
            {
                "gates": vars(self.gates),
                "commits": records(self.commits),
                "points": records(self.points),
                "steps": records(self.steps),
            }
        )


def commit_points(rows: pd.DataFrame, repo: Path) -> pd.DataFrame:
    """One line per (commit, dirty) point in history order: position, short name, subject."""
    points = (
        rows.groupby(POINT_KEY, as_index=False)["created"]
        .min()
        .rename(columns={"created": "first_run"})
    )
    order = topo_order(repo, points["git_sha"])
    rank = {sha: index for index, sha in enumerate(order)}
    points["known"] = points["git_sha"].isin(rank)
    points["rank"] = points["git_sha"].map(rank).astype(float)
    known = points[points["known"]].sort_values("first_run")
    latest_rank = known["rank"].cummax().to_numpy()
    before = (
        np.searchsorted(
            known["first_run"].to_numpy(),
            points.loc[~points["known"], "first_run"].to_numpy(),
            side="right",
        )
        - 1
    )
    points.loc[~points["known"], "rank"] = np.where(before >= 0, latest_rank[before], -1.0) + 0.5
    points = points.sort_values(["rank", "dirty", "first_run"], kind="stable").reset_index(
        drop=True
    )
    points["position"] = np.arange(len(points))
    points["short"] = points["git_sha"].astype(str).str[:8] + np.where(
        points["dirty"], "+dirty", ""
    )
    points["subject"] = points["git_sha"].map(subjects(repo, order)).fillna("")
    return points.drop(columns="rank")


def series_points(rows: pd.DataFrame, commits: pd.DataFrame) -> pd.DataFrame:
    """Metric points per cell, wall-clock points per cell, host and device; the newest row per
    point."""
    placed = rows.merge(commits[[*POINT_KEY, "position"]], on=POINT_KEY).sort_values(
        "created", kind="stable"
    )
    metric = placed[placed["value"].notna()].drop_duplicates(
        ["config_hash", "position"], keep="last"
    )
    timed = placed[placed["s_per_sample"].notna()].drop_duplicates(
        ["config_hash", "host", "device", "position"], keep="last"
    )
    columns = ["config_hash", *CELL, "position", "host", "device"]
    metric_points = metric[columns].assign(
        kind="metric",
        series=metric["config_hash"],
        value=metric["value"],
        se=metric["value_se"],
        suspect=False,
        host=None,
        device=None,
    )
    time_points = timed[columns].assign(
        kind="time",
        series=timed["config_hash"]
        + "@"
        + timed["host"].astype(str)
        + "/"
        + timed["device"].astype(str),
        value=timed["s_per_sample"],
        se=timed["s_per_sample_se"],
        suspect=timed["timing_suspect"],
    )
    points = pd.concat([metric_points, time_points], ignore_index=True)
    points["se"] = points["se"].astype(float)
    return points.sort_values(["kind", "series", "position"], kind="stable").reset_index(drop=True)


def find_steps(points: pd.DataFrame, commits: pd.DataFrame, gates: Gates) -> pd.DataFrame:
    """Every worse/better step of every series; suspect timings take no part."""
    found = []
    for (kind, _), series in points[~points["suspect"]].groupby(["kind", "series"], sort=False):
        tol = gates.metric_tol if kind == "metric" else gates.time_tol
        for step in detect(
            series["value"].to_numpy(),
            series["se"].to_numpy(),
            tol,
            gates.z,
            shared_noise=kind == "metric",
        ):
            first = series.iloc[step.start]
            found.append(
                {
                    **first[
                        ["kind", "series", "config_hash", *CELL, "host", "device", "position"]
                    ].to_dict(),
                    "before": step.before,
                    "after": step.after,
                    "se_before": step.se_before,
                    "se_after": step.se_after,
                    "rel": step.rel,
                    "score": step.score,
                    "verdict": step.verdict,
                }
            )
    columns = [
        "kind",
        "series",
        "config_hash",
        *CELL,
        "host",
        "device",
        "position",
        "before",
        "after",
        "se_before",
        "se_after",
        "rel",
        "score",
        "verdict",
    ]
    steps = pd.DataFrame(found, columns=columns)
    named = steps.merge(
        commits[["position", "git_sha", "dirty", "short", "subject"]], on="position"
    )
    return named.sort_values(["position", "kind", *CELL], kind="stable").reset_index(drop=True)


def build(paths: Sequence[Path], repo: Path, gates: Gates) -> History:
    """Read the rows under ``paths`` and build their history."""
    rows = read_store(paths)
    rows = rows.assign(
        dirty=rows["git_dirty"].eq(True),
        git_sha=rows["git_sha"].fillna("unknown").astype(str),
        timing_suspect=rows["timing_suspect"].eq(True),
    )
    commits = commit_points(rows, repo)
    points = series_points(rows, commits)
    return History(commits, points, find_steps(points, commits, gates), gates)


def _what(step: pd.Series) -> str:
    return (
        step["metric"] if step["kind"] == "metric" else f"s/sample {step['host']} {step['device']}"
    )


def steps_table(history: History) -> str:
    """The detected steps, one line each."""
    steps = history.steps
    shown = pd.DataFrame(
        {
            **{key: steps[key] for key in ["dataset", "solver", "nfe", "method"]},
            "series": steps.apply(_what, axis=1),
            "commit": steps["short"],
            "subject": steps["subject"].str.slice(0, 50),
            "before": steps["before"].map("{:.6g}".format),
            "after": steps["after"].map("{:.6g}".format),
            "rel": steps["rel"].map("{:+.2%}".format),
            "in SE": steps["score"].map(lambda s: "no SE" if np.isnan(s) else f"{s:+.1f}"),
            "verdict": steps["verdict"],
        }
    )
    return tabulate(
        shown, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True
    )


def summary(history: History) -> str:
    kinds = history.points.drop_duplicates("series")["kind"].value_counts()
    verdicts = history.steps["verdict"].value_counts()
    known = int(history.commits["known"].sum())
    return (
        f"{len(history.commits)} commit point(s) ({known} ordered by git ancestry), "
        f"{kinds.get('metric', 0)} metric and {kinds.get('time', 0)} wall-clock series; "
        f"{verdicts.get('worse', 0)} regression(s), {verdicts.get('better', 0)} improvement(s)"
        f"; {int(history.points['suspect'].sum())} timing_suspect point(s) drawn but not used"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = UsageParser(
        prog="python -m bench.history",
        description=__doc__.splitlines()[0],
        epilog="Stores: results/history/ (README, 'Tracking commits').",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="STORE_OR_RUN",
        help="result stores (folders of run files) or run files",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path("."),
        help="git repository that orders the commits (default: the current folder)",
    )
    parser.add_argument(
        "--metric-tol",
        type=gate_arg,
        default=DEFAULT_METRIC_TOL,
        metavar="REL",
        help=f"a metric step must exceed this relative size (default {DEFAULT_METRIC_TOL:g})",
    )
    parser.add_argument(
        "--time-tol",
        type=gate_arg,
        default=DEFAULT_TIME_TOL,
        metavar="REL",
        help=f"a wall-clock step must exceed this relative size (default {DEFAULT_TIME_TOL:g})",
    )
    parser.add_argument(
        "--z",
        type=gate_arg,
        default=DEFAULT_Z,
        metavar="Z",
        help=f"a step must also exceed Z combined SEs (default {DEFAULT_Z:g})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE.json",
        help="store commits, points and steps for `python -m report --history`",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when the newest commit point starts a regression (for CI)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        history = build(args.paths, args.repo, Gates(args.metric_tol, args.time_tol, args.z))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(args.out, history.to_json().encode())
    except UserError as err:
        print(f"bench.history: {err}", file=sys.stderr)
        return 2
    print(summary(history))
    if not history.steps.empty:
        print(steps_table(history))
    newest = history.newest_regressions
    if args.fail_on_regression and not newest.empty:
        print(
            f"the newest commit point ({newest['short'].iloc[0]}) starts "
            f"{len(newest)} regression(s)"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
