"""``index.html``: one self-contained page (inline CSS, relative links, no network) with every table,
figure and the provenance of the rows shown."""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import pandas as pd

from report.plots import FigureFile
from report.tables import Table, to_html

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table.results { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
table.results th, table.results td { padding: 0.2em 0.7em; text-align: right; }
table.results thead tr:last-child th { border-bottom: 1px solid #444; }
table.results { border-top: 2px solid #444; border-bottom: 2px solid #444; }
table.results tbody th { text-align: left; font-weight: normal; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption, .links, .note { color: #555; font-size: 0.9em; }
nav ul { columns: 2; }
"""


@dataclass(frozen=True)
class TableFile:
    """A rendered table and the stem (relative path without extension) of its .md/.tex files."""

    stem: str
    title: str
    table: Table
    note: str = ""


@dataclass
class Section:
    """Everything shown for one dataset."""

    dataset: str
    metric: str
    num_rows: int
    tables: list[TableFile] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)


def provenance(cells: pd.DataFrame) -> pd.DataFrame:
    """One line per run behind the shown cells: code version, machine, software, dates, row count."""
    runs = cells.assign(
        commit=cells["git_sha"].astype(str).str[:10] + cells["git_dirty"].map({True: " (dirty)"}).fillna("")
    )
    fields = ["commit", "device", "torch_version", "package_version", "host"]
    summary = runs.groupby("run_id", sort=False).agg(
        **{f: (f, "first") for f in fields},
        rows=("config_hash", "size"),
        first=("created_at", "min"),
        last=("created_at", "max"),
    )
    summary = summary.sort_values("first")
    summary[["first", "last"]] = summary[["first", "last"]].map(lambda t: t.strftime("%Y-%m-%d %H:%M UTC"))
    names = {"torch_version": "torch", "package_version": "pasbench", "rows": "cells shown",
             "first": "first row", "last": "last row"}
    return summary.reset_index().rename(columns=names)


def _table_html(item: TableFile) -> str:
    links = " | ".join(f'<a href="{escape(item.stem)}.{ext}">{label}</a>' for ext, label in
                       (("md", "Markdown"), ("tex", "LaTeX")))
    note = f'<p class="note">{escape(item.note)}</p>' if item.note else ""
    table_id = item.stem.replace("/", "_")
    return f"<h3>{escape(item.title)}</h3>\n{note}\n{to_html(item.table, table_id)}\n<p class=\"links\">{links}</p>"


def figure_html(item: FigureFile) -> str:
    stem = escape(item.stem)
    return (
        f"<h3>{escape(item.title)}</h3>\n<figure><a href=\"{stem}.svg\"><img src=\"{stem}.png\" "
        f"alt=\"{escape(item.title)}\"></a>\n<figcaption>{escape(item.caption)} "
        f"(<a href=\"{stem}.svg\">SVG</a>)</figcaption></figure>"
    )


def _section_html(section: Section) -> str:
    body = [_table_html(t) for t in section.tables] + [figure_html(f) for f in section.figures]
    heading = f"{escape(section.dataset)} ({escape(section.metric.upper())}, {section.num_rows} cells)"
    return f'<section id="{escape(section.dataset)}">\n<h2>{heading}</h2>\n' + "\n".join(body) + "\n</section>"


def render(sections: list[Section], published: TableFile | None, cells: pd.DataFrame) -> str:
    """The whole page as HTML text."""
    first, last = cells["created_at"].min(), cells["created_at"].max()
    runs = provenance(cells)
    nav = "".join(f'<li><a href="#{escape(s.dataset)}">{escape(s.dataset)}</a></li>' for s in sections)
    extra = ""
    if published is not None:
        nav += '<li><a href="#published">Published numbers</a></li>'
        extra = f'<section id="published">\n<h2>Published numbers</h2>\n{_table_html(published)}\n</section>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>pasbench report</title><style>{CSS}</style></head>
<body>
<h1>pasbench report</h1>
<p class="note">{len(cells)} cells (newest row per cell) from {len(runs)} run(s),
{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC. Metrics are lower-is-better; best per NFE in bold.</p>
<nav><ul>{nav}<li><a href="#provenance">Provenance</a></li></ul></nav>
{"".join(_section_html(s) for s in sections)}
{extra}
<section id="provenance">
<h2>Provenance</h2>
{runs.to_html(classes="results", border=0, index=False)}
</section>
</body>
</html>
"""
