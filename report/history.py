"""The trend page (`python -m report --history FILE.json`): metric and wall-clock against commit.

Reads the file ``python -m bench.history --out FILE.json`` stores: commit points in git-ancestry
order, every series' points and the steps bench found and judged. The report draws and tabulates
them; it computes no verdict of its own (it imports nothing from bench, so the one verdict rule
stays in bench.verdict and reaches the page through the file).

Per dataset, two figures of small multiples, one panel per solver and NFE: the metric against
commit (base and PAS, +- value_se) and seconds per sample against commit (one line per host and
device, +- s_per_sample_se; hollow markers: timing_suspect rows, drawn but not used to detect
steps). A vertical line marks each detected step in the panel of its series: red a regression,
green an improvement. Below, a table lists every step, newest first, with its commit's short hash
and subject. Only the last ``--last`` commit points are shown (default 30; 0 = all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from report.load import ReportInputError
from report.page import CSS, figure_html
from report.plots import FigureFile, figure_style, save_figure, slug

DEFAULT_LAST = 30
STEP_COLOURS = {"worse": "#c0392b", "better": "#27ae60"}
PANEL_COLUMNS = 4
# At most this many commit labels per axis; the others are left unlabelled.
MAX_TICKS = 12
SUBJECT_CHARS = 72


@dataclass(frozen=True)
class Trend:
    """A stored history: commit points, series points and steps."""

    commits: pd.DataFrame
    points: pd.DataFrame
    steps: pd.DataFrame
    gates: dict


def load_history(path: Path) -> Trend:
    """The history file as frames; a missing or malformed file is a ReportInputError."""
    try:
        data = json.loads(path.read_text())
        frames = {
            key: pd.DataFrame.from_records(data[key]) for key in ("commits", "points", "steps")
        }
    except FileNotFoundError:
        raise ReportInputError(f"no such file: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReportInputError(f"{path}: not a history from bench.history --out ({err})") from None
    if frames["commits"].empty or frames["points"].empty:
        raise ReportInputError(f"{path}: the history has no points")
    return Trend(frames["commits"], frames["points"], frames["steps"], data.get("gates", {}))


def last_commits(trend: Trend, last: int) -> Trend:
    """Only the newest ``last`` commit points (all of them for 0)."""
    if last <= 0:
        return trend
    first = trend.commits["position"].max() - last + 1

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["position"] >= first] if not frame.empty else frame

    return Trend(keep(trend.commits), keep(trend.points), keep(trend.steps), trend.gates)


def _ticks(ax: object, commits: pd.DataFrame) -> None:
    shown = commits.sort_values("position")
    every = max(1, int(np.ceil(len(shown) / MAX_TICKS)))
    # Label the newest commit always; step back from it.
    labelled = shown.iloc[::-1].iloc[::every].iloc[::-1]
    ax.set_xticks(labelled["position"], labelled["short"], rotation=90, fontsize=7)


def _panel(
    ax: object, points: pd.DataFrame, steps: pd.DataFrame, palette: dict, scale: float
) -> None:
    """One solver and NFE: a line per series, error bars, hollow suspect points, step lines."""
    for (label, _), line in points.groupby(["label", "series"], sort=True):
        line = line.sort_values("position")
        colour = palette[label]
        y, err = line["value"] * scale, line["se"].astype(float) * scale
        ax.errorbar(
            line["position"],
            y,
            yerr=err.where(err.notna(), 0),
            color=colour,
            lw=1,
            capsize=2,
            marker="o",
            ms=3,
            label=label,
        )
        suspect = line[line["suspect"]]
        ax.scatter(
            suspect["position"],
            suspect["value"] * scale,
            s=30,
            facecolors="white",
            edgecolors=colour,
            zorder=3,
        )
    for step in steps.itertuples():
        ax.axvline(step.position - 0.5, color=STEP_COLOURS[step.verdict], ls="--", lw=1)


def _labels(points: pd.DataFrame) -> pd.Series:
    """Legend label of each point: its method (base, pas, gits, ...), with host and device for
    wall-clock series."""
    sampler = points["method"].astype(str)
    where = points["host"].fillna("").astype(str) + " " + points["device"].fillna("").astype(str)
    return pd.Series(sampler, index=points.index).where(
        points["kind"] == "metric", sampler + " @ " + where.str.strip()
    )


def trend_figure(trend: Trend, dataset: str, kind: str, out: Path) -> FigureFile | None:
    """Small multiples of one dataset's metric or wall-clock against commit."""
    points = trend.points[(trend.points["dataset"] == dataset) & (trend.points["kind"] == kind)]
    if points.empty:
        return None
    points = points.assign(label=_labels(points))
    steps = (
        trend.steps[(trend.steps["dataset"] == dataset) & (trend.steps["kind"] == kind)]
        if not trend.steps.empty
        else trend.steps
    )
    panels = points[["solver", "nfe"]].drop_duplicates().sort_values(["solver", "nfe"])
    columns = min(PANEL_COLUMNS, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    labels = sorted(points["label"].unique())
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    metric = str(points["metric"].iloc[0]).upper()
    scale, unit = (1.0, metric) if kind == "metric" else (1e3, "ms per sample")
    with figure_style():
        fig = Figure(figsize=(3.2 * columns + 1.5, 2.6 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, squeeze=False)).ravel()
        for ax, (solver, nfe) in zip(axes, panels.itertuples(index=False), strict=False):
            chosen = (points["solver"] == solver) & (points["nfe"] == nfe)
            mine = (
                steps[(steps["solver"] == solver) & (steps["nfe"] == nfe)]
                if not steps.empty
                else steps
            )
            _panel(ax, points[chosen], mine, palette, scale)
            ax.set_title(f"{solver}, NFE {nfe}", fontsize=9)
            ax.set_ylabel(unit, fontsize=8)
            _ticks(ax, trend.commits)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, names, loc="outside lower center", ncols=min(len(names), 4), frameon=False
        )
    what = "metric" if kind == "metric" else "time"
    stem = f"history/{slug(dataset)}_{what}"
    save_figure(fig, out, stem)
    title = f"{dataset}: {metric if kind == 'metric' else 'wall-clock'} against commit"
    caption = (
        "Oldest commit left; ± one standard error; dashed lines: detected steps (red "
        "regression, green improvement), drawn before the step's first commit."
    )
    if kind == "time":
        caption += " Hollow markers: timing_suspect rows (drawn, not used to detect steps)."
    return FigureFile(stem, title, caption)


def _shorten(subject: str) -> str:
    """Long subject lines (this project writes whole paragraphs) cut to SUBJECT_CHARS."""
    return subject if len(subject) <= SUBJECT_CHARS else subject[: SUBJECT_CHARS - 1] + "\u2026"


def steps_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """The detected steps as display strings, newest first."""
    if steps.empty:
        return pd.DataFrame()
    shown = steps.sort_values("position", ascending=False, kind="stable")
    series = np.where(
        shown["kind"] == "metric",
        shown["metric"].astype(str),
        "s/sample " + shown["host"].astype(str) + " " + shown["device"].astype(str),
    )
    return pd.DataFrame(
        {
            "commit": shown["short"],
            "subject": shown["subject"].map(_shorten),
            "dataset": shown["dataset"],
            "solver": shown["solver"],
            "NFE": shown["nfe"],
            "method": shown["method"],
            "series": series,
            "before": shown["before"].map("{:.5g}".format),
            "after": shown["after"].map("{:.5g}".format),
            "relative": shown["rel"].map("{:+.2%}".format),
            "in SE": shown["score"].map(lambda s: "no SE" if pd.isna(s) else f"{s:+.1f}"),
            "verdict": shown["verdict"],
        }
    )


def render_history(
    trend: Trend, figures: dict[str, list[FigureFile]], table: pd.DataFrame, shown_last: int
) -> str:
    """The trend page as HTML text."""
    commits = trend.commits.sort_values("position")
    span = f"the last {len(commits)} commit points" if shown_last > 0 else "every commit point"
    gates = ", ".join(f"{key} {value:g}" for key, value in trend.gates.items())
    body = []
    for dataset, items in figures.items():
        body.append(
            f'<section id="{escape(dataset)}">\n<h2>{escape(dataset)}</h2>\n'
            + "\n".join(figure_html(item) for item in items)
            + "\n</section>"
        )
    steps_html = (
        table.to_html(classes="results", border=0, index=False)
        if not table.empty
        else "<p>No regression or improvement detected.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>pasbench history</title><style>{CSS}</style></head>
<body>
<h1>pasbench history</h1>
<p class="note">{span}, {escape(commits["short"].iloc[0])} to {escape(commits["short"].iloc[-1])}
in git-ancestry order; steps judged with {escape(gates)} (bench.verdict).</p>
<section id="steps">
<h2>Detected regressions and improvements</h2>
{steps_html}
</section>
{"".join(body)}
</body>
</html>
"""


def build_history(path: Path, out: Path, last: int = DEFAULT_LAST) -> Path:
    """Write ``history.html`` with its figures and ``history/steps.md`` under ``out``."""
    trend = last_commits(load_history(path), last)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for dataset in sorted(trend.points["dataset"].unique()):
        drawn = [trend_figure(trend, dataset, kind, out) for kind in ("metric", "time")]
        figures[dataset] = [figure for figure in drawn if figure is not None]
    table = steps_frame(trend.steps)
    (out / "history").mkdir(exist_ok=True)
    (out / "history" / "steps.md").write_text(
        (table.to_markdown(index=False) if not table.empty else "No steps detected.") + "\n"
    )
    page = out / "history.html"
    page.write_text(render_history(trend, figures, table, last))
    return page
