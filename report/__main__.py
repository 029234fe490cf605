"""Render stored benchmark rows as tables, figures and one HTML page (`python -m report`).

Reads run files or folders (default ``results/runs/``), keeps the newest row per cell and writes
tables (``tables/*.md``, ``*.tex``), figures (``figures/*.png``, ``*.svg``) and ``index.html`` to
``--out`` (default ``report/build/``). ``--history FILE.json`` writes the trend page of a history
stored by ``python -m bench.history --out`` instead (``history.html``, report.history). Bad input:
one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from report.history import DEFAULT_LAST, build_history
from report.load import DEFAULT_STORE, SUSPECT_MARK, ReportInputError, latest_per_cell, load_rows
from report.page import Section, TableFile, render
from report.plots import dataset_figures, slug
from report.tables import (
    GAIN_NOTE,
    gain_table,
    metric_table,
    published_methods,
    published_table,
    settings_table,
    time_table,
    to_latex,
    to_markdown,
    with_labels,
)

METRICS = ("fd", "fid")
DEFAULT_OUT = Path("report/build")
# Published FIDs live beside the project: ../shared/data/published_fid.csv from the project root,
# and beside it GITS's and AMED's figures (published_fid_accelerators.csv).
PUBLISHED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "published_fid.csv"
ACCELERATORS_CSV = PUBLISHED_CSV.with_name("published_fid_accelerators.csv")


class _Parser(argparse.ArgumentParser):
    """Usage errors become a ReportInputError, reported as one line like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ReportInputError(message)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help=f"run files or folders (default {DEFAULT_STORE}/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT}/)")
    parser.add_argument("--metric", help="only rows scored with this metric: fd or fid")
    parser.add_argument("--datasets", nargs="+", help="only these datasets")
    parser.add_argument("--published", type=Path, nargs="+",
                        help="published numbers CSVs: solver FIDs "
                             "(dataset,solver,pas,nfe,fid,source) or accelerator FIDs "
                             "(dataset,base_solver,method,nfe,fid,source) (default: the shared "
                             "ones, where present)")
    parser.add_argument("--history", type=Path, metavar="FILE.json",
                        help="write the trend page (history.html) of a history stored by "
                             "`python -m bench.history --out FILE.json` instead of the report")
    parser.add_argument("--last", type=int, default=DEFAULT_LAST, metavar="N",
                        help=f"trend page: the newest N commit points (default {DEFAULT_LAST}; 0 = all)")
    return parser.parse_args(argv)


def select(rows: pd.DataFrame, metric: str | None, datasets: list[str] | None) -> pd.DataFrame:
    """Rows of the requested metric and datasets; an unknown metric or an empty selection is an error."""
    if metric is not None and metric not in METRICS:
        raise ReportInputError(f"unknown metric {metric!r}; choose from: {', '.join(METRICS)}")
    if metric is not None:
        rows = rows[rows["metric"] == metric]
    if datasets:
        unknown = sorted(set(datasets) - set(rows["dataset"]))
        if unknown:
            raise ReportInputError(f"no rows for dataset(s) {', '.join(unknown)} (metric {metric or 'any'})")
        rows = rows[rows["dataset"].isin(datasets)]
    if rows.empty:
        raise ReportInputError(f"no rows scored with {metric}")
    return rows


def _write_table(item: TableFile, out: Path) -> TableFile:
    path = out / item.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text(to_markdown(item.table) + "\n")
    path.with_suffix(".tex").write_text(to_latex(item.table))
    return item


def dataset_section(cells: pd.DataFrame, dataset: str, metric: str, out: Path) -> Section:
    """Tables and figures of one dataset, written under ``out``."""
    name = slug(dataset)
    tables = [TableFile(f"tables/{name}_{metric}", f"{metric.upper()} per NFE", metric_table(cells),
                        "Best value per NFE in bold; ± one standard error (jackknife over seed "
                        "blocks) where rows have blocks; PAS params: stored coordinates (range "
                        "over NFEs).")]
    if "clip_score" in cells and cells["clip_score"].notna().any():
        tables.append(TableFile(f"tables/{name}_clip_score", "CLIP score per NFE",
                                metric_table(cells, "clip_score", higher_is_better=True),
                                "100 x cosine of CLIP image and prompt embeddings; higher is "
                                "better, best per NFE in bold."))
    gain = gain_table(cells)
    if gain is not None:
        tables.append(TableFile(f"tables/{name}_pas_gain",
                                "Relative improvement over the base solver (PAS, GITS, ...)", gain,
                                GAIN_NOTE))
    tables.append(TableFile(f"tables/{name}_time", "Wall-clock per sample (ms)", time_table(cells),
                            "Sampling time only (no metric, no PAS fitting, no warm-up batch), divided by the "
                            f"sample count; {SUSPECT_MARK} timed on a busy machine (timing_suspect)."))
    tables.append(TableFile(f"tables/{name}_settings", "Settings", settings_table(cells),
                            "Seeds are shared by the base and PAS cells of a solver and NFE."))
    for item in tables:
        _write_table(item, out)
    return Section(dataset, metric, len(cells), tables, dataset_figures(cells, dataset, out))


def published_section(cells: pd.DataFrame, csvs: list[Path] | None, out: Path) -> TableFile | None:
    """Published FIDs beside measured ones; default CSVs that are absent are skipped silently."""
    paths = csvs or [p for p in (PUBLISHED_CSV, ACCELERATORS_CSV) if p.is_file()]
    if not paths:
        return None
    frames = []
    for path in paths:
        try:
            frames.append(published_methods(pd.read_csv(path)))
        except (OSError, ValueError, KeyError) as err:
            raise ReportInputError(f"cannot read published numbers {path}: {err}") from None
    table = published_table(cells, pd.concat(frames, ignore_index=True))
    if table is None:
        return None
    return _write_table(TableFile("tables/published", "Published vs measured FID", table), out)


def build(args: argparse.Namespace) -> Path:
    """Write the whole report; returns the path of ``index.html``."""
    rows = select(load_rows(args.results or [DEFAULT_STORE]), args.metric, args.datasets)
    cells = with_labels(latest_per_cell(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    sections = [
        dataset_section(group, dataset, metric, args.out)
        for (dataset, metric), group in cells.groupby(["dataset", "metric"], sort=True)
    ]
    published = published_section(cells, args.published, args.out)
    index = args.out / "index.html"
    index.write_text(render(sections, published, cells))
    return index


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        index = build_history(args.history, args.out, args.last) if args.history else build(args)
    except ReportInputError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report written to {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
