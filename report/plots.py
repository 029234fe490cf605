"""Figures of stored cells, drawn with seaborn on matplotlib ``Figure`` objects and saved as PNG + SVG.

Figures are built without pyplot, so no global backend or figure state is touched (headless-safe).
Every function takes the labelled cells of one dataset (see ``report.tables.with_labels``) and
returns a :class:`FigureFile`, or None when the store holds nothing to draw.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from report.load import SUSPECT_MARK, load_preview
from report.tables import METHOD_SUFFIXES, method_suffix

FORMATS = ("png", "svg")
BASE = "base"
# Line and marker styles per method, in the tables' method order.
SAMPLERS = [BASE, *(method_suffix(m).strip() for m in METHOD_SUFFIXES if m != "base")]
TRAJECTORIES_SHOWN = 12
MAX_NFE_PANELS = 3


@dataclass(frozen=True)
class FigureFile:
    """A saved figure: ``stem`` is the path without extension, relative to the output folder."""

    stem: str
    title: str
    caption: str


@contextmanager
def figure_style() -> Iterator[None]:
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        yield


def save_figure(fig: Figure, out_dir: Path, stem: str) -> None:
    path = out_dir / stem
    path.parent.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=150, bbox_inches="tight")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def metric_label(metric: str) -> str:
    return f"{metric.upper()} (lower is better)"


def _palette(cells: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    families = list(dict.fromkeys(cells.sort_values(["family"])["family"]))
    return dict(zip(families, sns.color_palette("colorblind", len(families)), strict=True))


def _plot_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Columns named as the legends should read."""
    labels = cells["method_id"].map(lambda m: method_suffix(m).strip() or BASE)
    return cells.assign(Solver=cells["family"], Sampler=labels)


def _wants_log(values: pd.Series) -> bool:
    """Log scale helps when positive values span more than a factor of ten."""
    positive = values[values > 0]
    return len(positive) == len(values) and positive.max() > 10 * positive.min()


def _legend_outside(ax: object) -> None:
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def metric_vs_nfe(cells: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile:
    """Metric against NFE: colour = solver, solid = base, dashed = PAS."""
    metric = cells["metric"].iloc[0]
    data = _plot_frame(cells)
    with figure_style():
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        sns.lineplot(
            data=data, x="nfe", y="value", hue="Solver", style="Sampler", units="method",
            estimator=None, style_order=SAMPLERS, markers=True, palette=_palette(cells), ax=ax,
        )
        bars = _error_bars(ax, data, _palette(cells))
        if _wants_log(data["value"]):
            ax.set_yscale("log")
        ax.set_xticks(sorted(data["nfe"].unique()))
        ax.set(xlabel="NFE (denoiser calls)", ylabel=metric_label(metric), title=f"{dataset}: {metric.upper()} vs NFE")
        _legend_outside(ax)
    stem = f"figures/{slug(dataset)}_metric_vs_nfe"
    save_figure(fig, out_dir, stem)
    note = " Error bars: ± one standard error (jackknife over seed blocks)." if bars else ""
    return FigureFile(stem, f"{metric.upper()} vs NFE",
                      "Solid lines: base solvers; other styles: with PAS, GITS, ..." + note)


def _error_bars(ax: object, data: pd.DataFrame, palette: dict) -> bool:
    """± value_se at every point that has one, in its solver's colour; whether any was drawn."""
    if "value_se" not in data:
        return False
    shown = data[data["value_se"].notna()]
    for family, points in shown.groupby("family"):
        ax.errorbar(points["nfe"], points["value"], yerr=points["value_se"].astype(float),
                    fmt="none", ecolor=palette[family], elinewidth=1, capsize=2)
    return not shown.empty


def quality_vs_time(cells: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile | None:
    """One point per cell: metric against wall-clock milliseconds per sample; marker size = NFE."""
    data = _plot_frame(cells[cells["s_per_sample"] > 0])
    data = data.assign(ms_per_sample=1000 * data["s_per_sample"])
    if data.empty:
        return None
    metric = data["metric"].iloc[0]
    with figure_style():
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        sns.scatterplot(
            data=data.rename(columns={"nfe": "NFE"}), x="ms_per_sample", y="value", hue="Solver",
            style="Sampler", style_order=SAMPLERS, size="NFE", sizes=(25, 150),
            palette=_palette(cells), ax=ax,
        )
        ax.set_xscale("log")
        # Label 1-2-5 steps only: the default minor labels collide when the range spans < 1 decade.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if _wants_log(data["value"]):
            ax.set_yscale("log")
        for _, point in data[data["timing_suspect"]].iterrows():
            ax.annotate(SUSPECT_MARK, (point["ms_per_sample"], point["value"]),
                        xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="wall-clock per sample (ms, log scale)", ylabel=metric_label(metric),
               title=f"{dataset}: quality vs sampling time")
        _legend_outside(ax)
    stem = f"figures/{slug(dataset)}_quality_vs_time"
    save_figure(fig, out_dir, stem)
    return FigureFile(stem, "Quality vs wall-clock", "One point per cell; larger markers use more NFE; "
                      f"{SUSPECT_MARK} timed on a busy machine (timing_suspect).")


def pas_steps(cells: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile | None:
    """Dot chart of the steps PAS corrected, one panel per PAS method, one row per NFE."""
    fitted = cells[cells["pas"] & cells["pas_steps"].map(lambda s: isinstance(s, list))]
    if fitted.empty:
        return None
    methods = list(dict.fromkeys(fitted["method"]))
    nfes = sorted(fitted["nfe"].unique())
    last_step = max(max(steps, default=0) for steps in fitted["pas_steps"])
    palette = _palette(cells)
    with figure_style():
        fig = Figure(figsize=(2.2 + 2.4 * len(methods), 1.4 + 0.35 * len(nfes)), layout="constrained")
        axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
        for ax, method in zip(axes, methods, strict=True):
            rows = fitted[fitted["method"] == method]
            for _, row in rows.iterrows():
                y = nfes.index(row["nfe"])
                ax.scatter(row["pas_steps"], [y] * len(row["pas_steps"]), color=palette[row["family"]], s=30)
                if not pd.isna(row.get("pas_params")):
                    ax.annotate(f"{int(row['pas_params'])} p", (last_step + 0.6, y), va="center", fontsize=8)
            ax.set_title(method, fontsize=10)
            ax.set_xlim(-0.5, last_step + 2.5)
            ax.set_xticks(range(0, last_step + 1, max(1, math.ceil((last_step + 1) / 8))))
            ax.set_xlabel("corrected step i")
        axes[0].set_yticks(range(len(nfes)), [str(n) for n in nfes])
        axes[0].set_ylim(-0.6, len(nfes) - 0.4)
        axes[0].set_ylabel("NFE")
        fig.suptitle(f"{dataset}: steps corrected by PAS")
    stem = f"figures/{slug(dataset)}_pas_steps"
    save_figure(fig, out_dir, stem)
    return FigureFile(stem, "Steps corrected by PAS",
                      "Step 0 leaves the noise; \"p\" = stored PAS parameters of that cell.")


Pair = tuple[pd.Series, pd.Series, dict[str, np.ndarray], dict[str, np.ndarray]]


def _pairs(cells: pd.DataFrame, key: str, ndim: int) -> list[Pair]:
    """(base row, PAS row, base preview, PAS preview) of one family and NFE, same seeds.

    Only pairs whose previews both hold ``key`` with ``samples`` of ``ndim`` dimensions are kept.
    """
    with_preview = cells[cells["preview"].map(lambda p: isinstance(p, str) and bool(p))]
    pairs = []
    for (_, _), group in with_preview.groupby(["family", "nfe"], sort=False):
        base, fitted = group[group["method_id"] == "base"], group[group["method_id"] == "pas"]
        if len(base) and len(fitted):
            pairs.append((base.iloc[0], fitted.iloc[0]))
    loaded = [(b, p, load_preview(b), load_preview(p)) for b, p in pairs]
    return [pair for pair in loaded if all(_holds(pv, key, ndim) for pv in pair[2:])]


def _holds(preview: dict[str, np.ndarray] | None, key: str, ndim: int) -> bool:
    return preview is not None and key in preview and preview["samples"].ndim == ndim


def _family_order(cells: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(cells["family"]))


def trajectories(cells: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile | None:
    """2-D data: base, PAS and teacher paths from the same latents over the data density.

    The density is a Gaussian KDE of the teacher's final states pooled over every preview of the
    dataset: the report reads stored results only, so it cannot evaluate the true mixture, and the
    teacher's endpoints are the closest stored stand-in for data samples.
    """
    pairs = _pairs(cells, "trajectory", ndim=2)
    if not pairs:
        return None
    families = [f for f in _family_order(cells) if any(pair[0]["family"] == f for pair in pairs)]
    nfes = sorted({pair[0]["nfe"] for pair in pairs})[:MAX_NFE_PANELS]
    teacher_ends = np.concatenate([pair[2]["teacher"][-1] for pair in pairs])
    low, high = teacher_ends.min(axis=0), teacher_ends.max(axis=0)
    pad = 0.25 * (high - low).max()
    metric = cells["metric"].iloc[0].upper()
    with figure_style():
        fig = Figure(figsize=(3.0 * len(nfes), 3.0 * len(families)), layout="constrained")
        axes = fig.subplots(len(families), len(nfes), squeeze=False)
        for ax in axes.flat:
            ax.set_visible(False)
        for base, fitted, base_preview, fitted_preview in pairs:
            if base["nfe"] not in nfes:
                continue
            ax = axes[families.index(base["family"]), nfes.index(base["nfe"])]
            ax.set_visible(True)
            # Rasterized: the filled contours would make the SVG megabytes large.
            sns.kdeplot(x=teacher_ends[:, 0], y=teacher_ends[:, 1], fill=True, cmap="Greys", levels=6,
                        thresh=0.05, bw_adjust=0.5, alpha=0.6, rasterized=True, ax=ax)
            _draw_paths(ax, base_preview, fitted_preview)
            ax.set(xlim=(low[0] - pad, high[0] + pad), ylim=(low[1] - pad, high[1] + pad), aspect="equal",
                   xticks=[], yticks=[], xlabel="", ylabel="")
            ax.set_title(f"{base['family']}, NFE {base['nfe']}\n{metric} {_short(base['value'])} -> "
                         f"{_short(fitted['value'])} with PAS", fontsize=9)
        fig.legend(handles=_path_legend(), loc="outside lower center", ncols=3, frameon=False)
    stem = f"figures/{slug(dataset)}_trajectories"
    save_figure(fig, out_dir, stem)
    return FigureFile(
        stem, "Sampling trajectories (2-D)",
        f"First {TRAJECTORIES_SHOWN} preview latents; background: KDE of the teacher's final states. "
        "Paths start far outside the frame at sigma_max.",
    )


def _short(value: float) -> str:
    return f"{value:.3g}"


PATH_STYLES = {
    "teacher": {"color": "0.45", "lw": 0.8, "ls": "-"},
    "base": {"color": "tab:blue", "lw": 1.0, "ls": "-", "marker": "o", "ms": 2.5},
    "PAS": {"color": "tab:orange", "lw": 1.0, "ls": "--", "marker": "s", "ms": 2.5},
}


def _draw_paths(ax: object, base: dict[str, np.ndarray], fitted: dict[str, np.ndarray]) -> None:
    paths = {"teacher": base["teacher"], "base": base["trajectory"], "PAS": fitted["trajectory"]}
    for name, states in paths.items():
        for j in range(min(TRAJECTORIES_SHOWN, states.shape[1])):
            ax.plot(states[:, j, 0], states[:, j, 1], **PATH_STYLES[name])


def _path_legend() -> list[Line2D]:
    return [Line2D([], [], label=name, **style) for name, style in PATH_STYLES.items()]


def _tile(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """[n, C, H, W] in [-1, 1] -> one [rows*(H+1), cols*(W+1), C] image in [0, 1], 1-px white gaps."""
    n, channels, height, width = images.shape
    rows = math.ceil(n / cols)
    canvas = np.ones((rows * cols, channels, height + 1, width + 1), dtype=np.float32)
    canvas[:n, :, 1:, 1:] = np.clip((images + 1) / 2, 0, 1)
    canvas = canvas.reshape(rows, cols, channels, height + 1, width + 1).transpose(0, 3, 1, 4, 2)
    return canvas.reshape(rows * (height + 1), cols * (width + 1), channels)


def sample_grid(cells: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile | None:
    """Image data: preview samples per solver at its lowest NFE, base beside PAS, same seeds."""
    lowest: dict[str, Pair] = {}
    for pair in sorted(_pairs(cells, "samples", ndim=4), key=lambda pair: pair[0]["nfe"]):
        lowest.setdefault(pair[0]["family"], pair)
    if not lowest:
        return None
    families = [f for f in _family_order(cells) if f in lowest]
    metric = cells["metric"].iloc[0].upper()
    fig = Figure(figsize=(6.0, 3.2 * len(families)), layout="constrained")
    axes = fig.subplots(len(families), 2, squeeze=False)
    for row_axes, family in zip(axes, families, strict=True):
        base, fitted, base_preview, fitted_preview = lowest[family]
        for ax, cell, preview in zip(row_axes, (base, fitted), (base_preview, fitted_preview), strict=True):
            image = _tile(preview["samples"])
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(f"{cell['method']}, NFE {cell['nfe']} ({metric} {_short(cell['value'])})", fontsize=9)
            ax.axis("off")
    stem = f"figures/{slug(dataset)}_samples"
    save_figure(fig, out_dir, stem)
    return FigureFile(stem, "Samples at the lowest NFE",
                      "First 64 preview seeds; left: base solver, right: with PAS (same latents).")


PLOTS = (metric_vs_nfe, quality_vs_time, pas_steps, trajectories, sample_grid)


def dataset_figures(cells: pd.DataFrame, dataset: str, out_dir: Path) -> list[FigureFile]:
    """Every figure that applies to one dataset's cells."""
    return [fig for plot in PLOTS if (fig := plot(cells, dataset, out_dir)) is not None]
