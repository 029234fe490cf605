"""Compare a candidate results store with a baseline and flag regressions (`python -m bench.compare`).

BASELINE and CANDIDATE are run files or store folders. Cells are matched by ``config_hash``, the
hash of everything that determines a cell's numbers (model, dataset, solver, NFE, schedule,
options, PAS settings, sample count and seeds, dtype, precision, metric): two rows with the same
hash must give the same metric, and rows that differ in any of those settings never match. A
looser key such as (dataset, solver, nfe, pas, schedule, num_samples) would silently compare a
float32 run with a float64 baseline, or different solver options; with the hash such a change shows
up as cells missing on both sides instead, which asks for a deliberate baseline refresh.

Exit status: 1 when a matched cell's metric (FD/FID, lower is better) rose by more than
``--metric-tol`` (relative) *and* by more than ``--z`` combined standard errors, when its
``s_per_sample`` rose by more than ``--time-tol`` (relative; checked only when given), or when no
cell matches at all; 2 on bad input; 0 otherwise.

Noise: rows with seed blocks carry the metric's jackknife standard error ``value_se``
(bench.metrics.frechet). The combined standard error of a change is sqrt(se_base^2 + se_cand^2), the
error of two independent measurements; a rise smaller than ``--z`` (default 3, a one-sided false
alarm rate of about 0.1% per cell for independent reruns) of those is read as sampling noise. Where
either row lacks ``value_se`` (older rows, ``blocks = 1``) only the tolerance applies and the
table says "no SE". Each matched cell gets the verdict of bench.verdict, the rule bench.history
shares: "same" inside both the tolerance and z (neither listed nor counted as changed), "worse" or
"better" past both, "near miss" past one but not the other. Every changed cell is listed with
both numbers: the relative change against the tolerance and the change in combined SEs against
z. Timings get the same two gates with ``--time-tol`` and the same z, their
standard error ``s_per_sample_se`` coming from the spread of a cell's batch times (bench/timing.py;
rows without it: the tolerance alone). A cell whose baseline or candidate row is
``timing_suspect`` (timed on a busy machine) is left out of the time check, and the report lists it
as skipped; rows written before that field existed count as not suspect.

The default metric tolerance, 1e-9 relative, holds CPU float64 runs to their own determinism: the
same code gives the same bits, and 1e-9 leaves room only for reordered float64 sums (a different
BLAS or library version), far below any real change in sampling quality. Use a looser tolerance
for GPU or float32 baselines.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import UsageParser, UserError
from bench.results import read_store
from bench.verdict import (
    BETTER,
    DEFAULT_METRIC_TOL,
    DEFAULT_Z,
    NEAR_MISS,
    SAME,
    WORSE,
    change_in_se,
    gate_arg,
    judge,
    relative_change,
)

CELL_LABEL = ["dataset", "solver", "nfe", "method"]


@dataclass(frozen=True)
class Comparison:
    """Matched cells with their changes, cells on one side only, and the regression count."""

    matched: pd.DataFrame
    only_baseline: pd.DataFrame
    only_candidate: pd.DataFrame

    @property
    def time_skipped(self) -> pd.DataFrame:
        """Matched cells whose time was not checked because a side's timing is suspect."""
        return self.matched[self.matched["time_skipped"]]

    @property
    def regressions(self) -> int:
        return int((self.matched["worse"] | self.matched["slower"]).sum())

    @property
    def changed(self) -> pd.DataFrame:
        """Matched cells whose metric or checked time is not "same" (bench.verdict)."""
        return self.matched[(self.matched["verdict"] != SAME) | (self.matched["time_verdict"] != SAME)]

    @property
    def near_misses(self) -> int:
        return int(self.matched["near_miss"].sum())

    @property
    def failed(self) -> bool:
        return self.regressions > 0 or self.matched.empty


def load_side(path: Path) -> pd.DataFrame:
    """The newest row per cell of one side; missing paths, unreadable JSON and empty stores are errors."""
    newest = read_store([path]).sort_values("created", kind="stable")
    return newest.drop_duplicates("config_hash", keep="last").set_index("config_hash")


def noise_score(base: pd.DataFrame, cand: pd.DataFrame, field: str = "value",
                se_field: str = "value_se") -> pd.Series:
    """A field's change in combined standard errors (bench.verdict.change_in_se); NaN where a row
    has no standard error."""
    missing = pd.Series(np.nan, index=base.index)
    errors = [side.get(se_field, missing).astype(float) for side in (base, cand)]
    return pd.Series(change_in_se(base[field], cand[field], *errors), index=base.index)


def compare(baseline: pd.DataFrame, candidate: pd.DataFrame, metric_tol: float,
            time_tol: float | None, z: float = DEFAULT_Z) -> Comparison:
    """Match rows by config hash; flag metrics worse than ``metric_tol`` and times slower than
    ``time_tol``, each only when also past ``z`` combined standard errors (where rows have them)."""
    common = baseline.index.intersection(candidate.index)
    base, cand = baseline.loc[common], candidate.loc[common]
    metric_rel = pd.Series(relative_change(base["value"], cand["value"]), index=common)
    score = noise_score(base, cand)
    lost = cand["value"].isna() & base["value"].notna()
    verdict = pd.Series(judge(metric_rel, score, metric_tol, z), index=common).mask(lost, WORSE)
    time_rel = pd.Series(relative_change(base["s_per_sample"], cand["s_per_sample"]), index=common)
    time_score = noise_score(base, cand, "s_per_sample", "s_per_sample_se")
    checked = time_tol is not None
    suspect = _suspect(base) | _suspect(cand)
    time_verdict = pd.Series(judge(time_rel, time_score, time_tol if checked else np.inf, z),
                             index=common).where(~suspect & checked, SAME)
    matched = base[CELL_LABEL].assign(
        metric=base["metric"],
        value_base=base["value"],
        value_cand=cand["value"],
        metric_rel=metric_rel,
        time_base=base["s_per_sample"],
        time_cand=cand["s_per_sample"],
        time_rel=time_rel,
        time_score=time_score,
        score=score,
        verdict=verdict,
        time_verdict=time_verdict,
        worse=verdict == WORSE,
        near_miss=(verdict == NEAR_MISS) | (time_verdict == NEAR_MISS),
        slower=time_verdict == WORSE,
        time_skipped=suspect & checked,
    )
    return Comparison(
        matched=matched,
        only_baseline=baseline.loc[baseline.index.difference(candidate.index), CELL_LABEL],
        only_candidate=candidate.loc[candidate.index.difference(baseline.index), CELL_LABEL],
    )


def _suspect(rows: pd.DataFrame) -> pd.Series:
    """Rows whose timing is flagged suspect; a missing field (older rows) means not suspect."""
    return rows.get("timing_suspect", pd.Series(False, index=rows.index)).eq(True)


def _status(row: pd.Series) -> str:
    flags = [name for name in ("worse", "slower") if row[name]]
    if flags:
        return ", ".join(flags).upper()
    if row["near_miss"]:
        return NEAR_MISS
    return BETTER if row["verdict"] == BETTER else "faster"


def _in_se(score: float) -> str:
    return "no SE" if np.isnan(score) else f"{score:+.2f}"


def changed_table(comparison: Comparison) -> str:
    """The changed and regressed cells as a text table."""
    changed = comparison.changed
    shown = pd.DataFrame(
        {
            **{key: changed[key] for key in CELL_LABEL},
            "metric": changed["metric"],
            "base": changed["value_base"].map("{:.10g}".format),
            "candidate": changed["value_cand"].map("{:.10g}".format),
            "rel": changed["metric_rel"].map("{:+.2e}".format),
            "in SE": changed["score"].map(_in_se),
            "s/sample base": changed["time_base"].map("{:.3g}".format),
            "s/sample cand": changed["time_cand"].map("{:.3g}".format),
            "time rel": changed["time_rel"].map("{:+.1%}".format),
            "time in SE": changed["time_score"].map(_in_se),
            "status": changed.apply(_status, axis=1),
        }
    )
    return tabulate(shown, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True)


def side_counts(comparison: Comparison) -> str:
    """Cells per (dataset, solver): matched, changed, and on one side only (counts, no hashes)."""
    columns = {"matched": comparison.matched, "changed": comparison.changed,
               "only in baseline": comparison.only_baseline,
               "only in candidate": comparison.only_candidate}
    counts = pd.DataFrame({name: cells.groupby(["dataset", "solver"]).size()
                           for name, cells in columns.items()})
    counts = counts.fillna(0).astype(int).sort_index().reset_index()
    return tabulate(counts, headers="keys", tablefmt="simple", showindex=False)


def _cell_list(cells: pd.DataFrame) -> str:
    """One line per cell, in cell order, with its config hash last."""
    listed = cells.sort_values(CELL_LABEL).reset_index()[[*CELL_LABEL, "config_hash"]]
    return tabulate(listed, headers="keys", tablefmt="simple", showindex=False)


def report(comparison: Comparison, baseline: Path, candidate: Path, verbose: bool = False) -> str:
    """Everything ``main`` prints: a summary line, changed matched cells, then cell counts per
    dataset and solver; ``verbose`` adds every one-sided cell with its config hash."""
    summary = (
        f"{len(comparison.matched)} cells matched, {len(comparison.changed)} changed, "
        f"{comparison.regressions} regression(s); {len(comparison.only_baseline)} only in {baseline}, "
        f"{len(comparison.only_candidate)} only in {candidate}"
    )
    if comparison.near_misses:
        summary += f"; {comparison.near_misses} near miss(es) (past the tolerance or z, not both)"
    parts = [summary]
    if comparison.matched.empty:
        parts.append("no cell matches: a changed config hash needs a deliberate baseline refresh "
                     "(results/baseline/README.md)")
    if not comparison.changed.empty:
        parts.append(changed_table(comparison))
    skipped = comparison.time_skipped
    if not skipped.empty:
        parts.append(f"time check skipped for {len(skipped)} cell(s) with a suspect timing "
                     "(timed on a busy machine):\n"
                     + tabulate(skipped[CELL_LABEL], headers="keys", tablefmt="simple", showindex=False))
    parts.append(f"cells per dataset and solver (baseline {baseline}, candidate {candidate}):\n"
                 + side_counts(comparison))
    one_sided = ((f"only in {baseline}", comparison.only_baseline),
                 (f"only in {candidate}", comparison.only_candidate))
    if verbose:
        parts.extend(f"{name}:\n" + _cell_list(cells) for name, cells in one_sided if not cells.empty)
    elif any(not cells.empty for _, cells in one_sided):
        parts.append("--verbose lists the cells on one side only with their config hashes")
    return "\n\n".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = UsageParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="baseline run file or store folder")
    parser.add_argument("candidate", type=Path, help="candidate run file or store folder")
    parser.add_argument("--metric-tol", type=gate_arg, default=DEFAULT_METRIC_TOL, metavar="REL",
                        help=f"allowed relative metric increase (default {DEFAULT_METRIC_TOL:g})")
    parser.add_argument("--z", type=gate_arg, default=DEFAULT_Z, metavar="Z",
                        help="a metric or time rise must also exceed Z combined standard errors "
                             f"sqrt(se_base^2 + se_cand^2) (default {DEFAULT_Z:g}; 0 = tolerance "
                             "only; rows without value_se / s_per_sample_se: tolerance only)")
    parser.add_argument("--time-tol", type=gate_arg, metavar="REL",
                        help="allowed relative s_per_sample increase (default: times not checked)")
    parser.add_argument("--verbose", action="store_true",
                        help="also list every cell found on one side only, with its config hash")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        comparison = compare(load_side(args.baseline), load_side(args.candidate), args.metric_tol,
                             args.time_tol, args.z)
    except UserError as err:
        print(f"bench.compare: {err}", file=sys.stderr)
        return 2
    print(report(comparison, args.baseline, args.candidate, args.verbose))
    return 1 if comparison.failed else 0


if __name__ == "__main__":
    sys.exit(main())
