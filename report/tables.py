"""Paper-style tables of stored cells: metric per NFE, the gain of PAS and its peers (GITS, ...)
over the base solver, wall-clock, published numbers.

A :class:`Table` holds display strings plus a mask of bold cells; ``to_markdown`` (tabulate through
pandas), ``to_latex`` (pandas Styler, booktabs rules) and ``to_html`` render it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from report.load import SUSPECT_MARK
from report.uncertainty import LEVEL, Gain, paired_gain

SOLVER_NAMES = {
    "ddim": "DDIM",
    "euler": "Euler",
    "ipndm": "iPNDM",
    "ipndm_v": "iPNDM-v",
    "deis": "DEIS",
    "dpmpp": "DPM-Solver++",
    "unipc": "UniPC",
    "heun": "Heun",
    "dpm2": "DPM-Solver-2",
}
# Settings that can make two cells of one solver differ; shown in the row label only when they do.
VARIANT_FIELDS = ("schedule", "order", "options", "num_samples", "seeds", "dtype", "precision")
PAS_SUFFIX = " + PAS"
# Row-label suffix per stored method (the row field `method`); unknown methods show their name.
METHOD_SUFFIXES = {"base": "", "pas": PAS_SUFFIX, "gits": " + GITS", "gits_pas": " + GITS + PAS",
                   "amed": " + AMED"}
# Published tables' method names -> stored ones (published_fid_accelerators.csv).
PUBLISHED_METHODS = {"base": "base", "gits": "gits", "amed_plugin": "amed"}


@dataclass(frozen=True)
class Table:
    """Display strings (index = row labels) and which of them are bold."""

    text: pd.DataFrame
    bold: pd.DataFrame
    index_name: str = "Method"
    columns_name: str | None = "NFE"
    left_columns: tuple[str, ...] = field(default=())

    def alignments(self) -> list[str]:
        return ["left"] + ["left" if c in self.left_columns else "right" for c in self.text.columns]


def format_value(value: float) -> str:
    """Two decimals, or three significant figures below 1 (toy FDs are small); blank when missing."""
    if value is None or pd.isna(value):
        return ""
    if abs(value) >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def with_error(value: float, se: float | None) -> str:
    """``value +- se`` (SE to 2 significant figures), or the value alone without an SE."""
    if se is None or pd.isna(se) or value is None or pd.isna(value):
        return format_value(value)
    return f"{format_value(value)} ± {se:#.2g}"


def solver_label(name: str) -> str:
    return SOLVER_NAMES.get(name, name)


def _canonical(value: object) -> str:
    """A stable text form of a setting (dicts sorted), so equal settings compare equal."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_canonical(v)}" for k, v in sorted(value.items()))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int stored beside nulls comes back as float
    return str(value)


def _split_dicts(group: pd.DataFrame, text: pd.DataFrame) -> pd.DataFrame:
    """``text`` with each dict-valued field (options, pas_settings) split into one column per key,
    so a label names the key that differs (order=3), not the whole dict; keys that are row fields
    too are left to those."""
    for name in [f for f in text.columns if group[f].map(lambda v: isinstance(v, dict)).any()]:
        values = group[name].map(lambda v: v if isinstance(v, dict) else {})
        split = pd.DataFrame(list(values), index=group.index)
        split = split.drop(columns=[c for c in split.columns if c in text.columns]).map(_canonical)
        text = pd.concat([text.drop(columns=name), split], axis=1)
    return text


def _varying_suffix(group: pd.DataFrame, fields: tuple[str, ...]) -> pd.Series:
    """Per row, ``" (field=value, ...)"`` for the fields whose value differs within ``group``."""
    present = [f for f in fields if f in group]
    text = group[present].map(_canonical) if present else group[[]]
    text = _split_dicts(group, text)
    varying = [f for f in text.columns if text[f].nunique() > 1]
    if not varying:
        return pd.Series("", index=group.index)
    return text[varying].apply(lambda r: " (" + ", ".join(f"{f}={r[f]}" for f in varying) + ")", axis=1)


def method_suffix(method_id: str) -> str:
    return METHOD_SUFFIXES.get(method_id, f" + {method_id}")


def method_ids(cells: pd.DataFrame) -> pd.Series:
    """The stored method of each row (base, pas, gits, gits_pas, ...); rows from before the
    method axis, which have no ``method`` field, follow their ``pas`` flag."""
    if "method_id" in cells:
        return cells["method_id"]
    stored = cells["method"] if "method" in cells else pd.Series(None, index=cells.index)
    return stored.astype(object).fillna(cells["pas"].map({True: "pas", False: "base"}))


def with_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``family`` (solver plus any distinguishing setting) and ``method`` (family and the
    method's suffix: "iPNDM + GITS"); ``method_id`` (``method_ids``) is the stored method."""
    cells = cells.assign(method_id=method_ids(cells))
    family = pd.Series("", index=cells.index)
    pas_suffix = pd.Series("", index=cells.index)
    for _, group in cells.groupby(["dataset", "solver"], sort=False):
        family[group.index] = group["solver"].map(solver_label) + _varying_suffix(group, VARIANT_FIELDS)
        fitted = group[group["pas"]]
        if "pas_settings" in fitted and not fitted.empty:
            pas_suffix[fitted.index] = _varying_suffix(fitted, ("pas_settings",))
    cells["family"] = family
    cells["method"] = family + cells["method_id"].map(method_suffix) + pas_suffix
    return cells


def _method_order(cells: pd.DataFrame) -> list[str]:
    """Solvers in registry order, each base row followed by its PAS row(s), then its peers'."""
    rank = {name: i for i, name in enumerate(SOLVER_NAMES)}
    order = {name: i for i, name in enumerate(METHOD_SUFFIXES)}
    keys = cells.assign(rank=cells["solver"].map(lambda s: rank.get(s, len(rank))),
                        order=cells["method_id"].map(lambda m: order.get(m, len(order))))
    keys = keys.sort_values(["rank", "solver", "family", "order", "method"], kind="stable")
    return list(dict.fromkeys(keys["method"]))


def _pivot(cells: pd.DataFrame, value: str, index: str = "method") -> pd.DataFrame:
    newest = cells.sort_values("created_at", kind="stable").drop_duplicates([index, "nfe"], keep="last")
    grid = newest.pivot(index=index, columns="nfe", values=value)
    return grid.sort_index(axis=1)


def _params_range(values: pd.Series) -> str:
    counts = sorted({int(v) for v in values.dropna()})
    if not counts:
        return ""
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def metric_table(cells: pd.DataFrame, column: str = "value", higher_is_better: bool = False) -> Table:
    """Metric per method (rows) and NFE (columns) for the cells of one dataset; best per column bold.

    ``cells`` must carry the labels of :func:`with_labels`; ``column`` is the row field shown (the
    metric's ``value``, or e.g. ``clip_score``, where higher is better). The last column, "PAS
    params", gives the range of stored PAS coordinates over the NFEs of that row (one number when
    they agree).
    """
    values = _pivot(cells, column).reindex(_method_order(cells))
    best_values = values.max() if higher_is_better else values.min()
    best = values.map(format_value).eq(best_values.map(format_value), axis=1) & values.notna()
    # The metric's jackknife SE over seed blocks, where the rows have one.
    if column == "value" and "value_se" in cells and cells["value_se"].notna().any():
        errors = _pivot(cells, "value_se").reindex(values.index)
        text = values.combine(errors, lambda v, e: pd.Series(map(with_error, v, e), index=v.index))
    else:
        text = values.map(format_value)
    params = cells.groupby("method")["pas_params"].agg(_params_range) if "pas_params" in cells else None
    text["PAS params"] = params.reindex(text.index).fillna("") if params is not None else ""
    best["PAS params"] = False
    return Table(text=_str_columns(text), bold=_str_columns(best))


def _format_gain(gain: Gain | None) -> str:
    """``+4.6% ± 2.1%`` (shown bold when significant), ``+1.2% ± 2.1% (n.s.)`` when not,
    ``+4.6%`` without blocks, blank without a pair."""
    if not isinstance(gain, Gain):  # no pair (a method run at fewer NFEs): None or NaN
        return ""
    if gain.se is None:
        return f"{100 * gain.value:+.1f}%"
    return f"{100 * gain.value:+.1f}% ± {100 * gain.se:.1f}%" + ("" if gain.significant else " (n.s.)")


def gain_table(cells: pd.DataFrame) -> Table | None:
    """Each method's relative improvement over its base solver, (base - method) / base in percent,
    per method row (PAS, GITS, GITS + PAS, ...) and NFE, with its paired jackknife SE where rows
    have seed blocks; significant gains (report.uncertainty: the t interval at LEVEL excludes 0)
    are bold, the others marked "(n.s.)"."""
    improved = cells["method_id"] != "base"
    if not improved.any():
        return None
    family_of = cells[improved].drop_duplicates("method").set_index("method")["family"]
    order = [m for m in _method_order(cells) if m in family_of.index]
    has_blocks = "value_blocks" in cells
    sides = {}
    for column in ("value", "value_blocks") if has_blocks else ("value",):
        base = _pivot(cells[~improved], column, index="family")
        fitted = _pivot(cells[improved], column, index="method").reindex(order)
        sides[column] = (base.reindex(family_of[order].to_numpy()).set_axis(order), fitted)
    (base, fitted), columns = sides["value"], sides["value"][1].columns.intersection(sides["value"][0].columns)
    gains = pd.DataFrame(None, index=order, columns=columns, dtype=object)
    for method in order:
        for nfe in columns:
            if pd.isna(base.at[method, nfe]) or pd.isna(fitted.at[method, nfe]):
                continue
            blocks = ([side.at[method, nfe] for side in sides["value_blocks"]] if has_blocks
                      else [None, None])
            gains.at[method, nfe] = paired_gain(base.at[method, nfe], fitted.at[method, nfe], *blocks)
    gains = gains.dropna(how="all").dropna(axis=1, how="all")
    text = _beside_teacher_gains(gains, cells)
    bold = gains.map(lambda g: bool(isinstance(g, Gain) and g.significant))
    return Table(text=_str_columns(text), bold=_str_columns(bold))


# Marks a PAS-gain cell whose metric change (FD or FID) is significant and opposite in sign to
# the held-out teacher-distance gain (the yardstick PAS fits and its gate judges).
DISAGREE_MARK = "≠"


def yardsticks_disagree(gain: Gain | None, teacher_gain: float | None) -> bool:
    """True when the metric's gain is significant and its sign is opposite to the teacher gain's."""
    if not isinstance(gain, Gain) or not gain.significant or pd.isna(teacher_gain):
        return False
    return gain.value * teacher_gain < 0


def _beside_teacher_gains(gains: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Each gain's text, followed by the PAS row's held-out teacher-distance gain
    (``pas_holdout_gain``) where rows carry one, and DISAGREE_MARK where the two disagree."""
    text = gains.map(_format_gain)
    if "pas_holdout_gain" not in cells or cells["pas_holdout_gain"].isna().all():
        return text
    fitted = cells[cells["pas"]]
    teacher = _pivot(fitted, "pas_holdout_gain").reindex(index=gains.index, columns=gains.columns)
    for method in gains.index:
        for nfe in gains.columns:
            gain, held = gains.at[method, nfe], teacher.at[method, nfe]
            if not isinstance(gain, Gain) or pd.isna(held):
                continue
            mark = f" {DISAGREE_MARK}" if yardsticks_disagree(gain, held) else ""
            text.at[method, nfe] += f"; teacher {100 * held:+.1f}%{mark}"
    return text


GAIN_NOTE = (f"(base - method) / base; positive means the method (PAS, GITS, ...) is better. "
             f"± one standard error, jackknife over the seed blocks the base and method cells "
             f"share (paired). Bold: significant, the {LEVEL:.0%} t interval (K - 1 degrees of "
             f"freedom) excludes 0; (n.s.): it does not. "
             "teacher (PAS rows): the held-out gain PAS's gate judged, the relative drop of the "
             "fit's loss (the final state's distance to the teacher, L1 by default) on seeds the "
             "fit never saw. "
             f"{DISAGREE_MARK}: the two disagree in sign and the metric's change is significant "
             "(typically: samples move toward the teacher while their distribution gets worse).")


def time_table(cells: pd.DataFrame) -> Table:
    """Wall-clock seconds per sample (shown in milliseconds, 3 significant figures); a dagger
    marks times the runner flagged ``timing_suspect``."""
    order = _method_order(cells)
    millis = 1000 * _pivot(cells, "s_per_sample").reindex(order)
    suspect = _pivot(cells, "timing_suspect").reindex(order).eq(True)
    text = millis.map(lambda v: "" if pd.isna(v) else f"{v:#.3g}")
    text = text.where(~suspect, text + SUSPECT_MARK)
    return Table(text=_str_columns(text), bold=_str_columns(text.map(lambda _: False)))


SETTING_ROWS = {
    "schedule": "schedule",
    "num_samples": "samples",
    "seeds": "seeds",
    "dtype": "dtype",
    "precision": "precision",
}


# Settings that act only under another setting's value (the controlling setting's label, or a
# row field, and the values it must show): hidden where they do not act, so the table shows the
# settings in effect. Rows without the controlling setting (older stores) keep them.
CONDITIONAL_SETTINGS = {
    "rho": ("schedule", ("polynomial", "time_uniform", "discrete")),  # logsnr ignores it
    "precision": ("metric", ("fid",)),  # FD rows are the analytic datasets: no network
    "PAS lr": ("PAS optimizer", ("adam",)),
    "PAS epochs": ("PAS optimizer", ("adam",)),
    "PAS early_stop": ("PAS optimizer", ("adam",)),
    "PAS holdout": ("PAS validate", ("True",)),
}


def _in_effect(settings: dict[str, str], row: pd.Series) -> dict[str, str]:
    """``settings`` without those whose controlling setting (or ``row`` field) switches them off."""
    def acts(name: str) -> bool:
        control, values = CONDITIONAL_SETTINGS.get(name, (None, ()))
        shown = settings.get(control, _canonical(row[control]) if control in row else None)
        return shown is None or shown in values

    return {name: value for name, value in settings.items() if acts(name)}


def _family_settings(cells: pd.DataFrame) -> dict[str, str]:
    """One family's settings in effect, one entry per setting: row fields, solver options, PAS
    settings."""
    first = cells.iloc[0]
    settings = {label: _canonical(first[field]) for field, label in SETTING_ROWS.items() if field in first}
    conditioning = first.get("conditioning")
    if isinstance(conditioning, dict):
        settings["guidance"] = _canonical(conditioning.get("guidance"))
        settings["prompts"] = _canonical(conditioning.get("prompt") or conditioning.get("captions"))
    evals = first.get("unet_evals")
    if evals is not None and not pd.isna(evals) and evals != first["nfe"]:
        # Guided models: one NFE is one batched UNet call over 2B samples.
        settings["UNet evals"] = (f"{_canonical(evals / first['nfe'])} x NFE "
                                  "(the reference toolbox reports this count as NFE)")
    if isinstance(first.get("options"), dict):
        settings |= {name: _canonical(v) for name, v in sorted(first["options"].items())}
    fitted = [v for v in cells.get("pas_settings", []) if isinstance(v, dict)]
    if fitted:
        settings |= {f"PAS {name}": _canonical(v) for name, v in sorted(fitted[0].items())}
    return _in_effect(settings, first)


def settings_table(cells: pd.DataFrame) -> Table:
    """Settings (rows) behind each solver family's numbers (columns), solver options and PAS included."""
    order = list(dict.fromkeys(cells.set_index("method").loc[_method_order(cells), "family"]))
    columns = {family: _family_settings(cells[cells["family"] == family]) for family in order}
    names = list(dict.fromkeys(name for settings in columns.values() for name in settings))
    # Shared row fields first (in SETTING_ROWS order), then solver options, then PAS settings.
    groups = {label: (0, f"{i:03d}") for i, label in enumerate(SETTING_ROWS.values())}
    names.sort(key=lambda name: groups.get(name, (2 if name.startswith("PAS ") else 1, name)))
    text = pd.DataFrame(columns, index=names).fillna("")
    return Table(text=_str_columns(text), bold=_str_columns(text.map(lambda _: False)),
                 index_name="Setting", columns_name=None, left_columns=tuple(text.columns))


def published_methods(published: pd.DataFrame) -> pd.DataFrame:
    """A published table with a ``method_id`` per row: from its ``pas`` flag (published_fid.csv)
    or its ``base_solver``/``method`` columns (published_fid_accelerators.csv)."""
    if "pas" in published:
        flags = published["pas"].map(lambda p: str(p).strip().lower() in ("true", "1"))
        return published.assign(method_id=flags.map({True: "pas", False: "base"}))
    return published.rename(columns={"base_solver": "solver"}).assign(
        method_id=published["method"].map(lambda m: PUBLISHED_METHODS.get(m, m)))


def published_table(cells: pd.DataFrame, published: pd.DataFrame) -> Table | None:
    """Published FIDs beside the measured ones of the same cells (None when no cell matches);
    ``published`` holds the rows of one or more published tables (see published_methods)."""
    measured = cells[cells["metric"] == "fid"]
    keys = ["dataset", "solver", "method_id", "nfe"]
    # A figure that two published tables both give (a base FID) is shown once.
    published = published.drop_duplicates([*keys, "fid"])
    merged = measured[[*keys, "method", "value"]].merge(
        published[[*keys, "fid", "source"]], on=keys)
    if merged.empty:
        return None
    rank = {name: i for i, name in enumerate(_method_order(cells))}
    merged = merged.assign(rank=merged["method"].map(rank)).sort_values(["dataset", "rank", "nfe"])
    text = pd.DataFrame(
        {
            "Dataset": merged["dataset"],
            "NFE": merged["nfe"].astype(str),
            "Published": merged["fid"].map(format_value),
            "Measured": merged["value"].map(format_value),
            "Difference": (merged["value"] - merged["fid"]).map(lambda d: f"{d:+.2f}"),
            "Source": merged["source"],
        }
    ).set_index(merged["method"].rename(None))
    return Table(
        text=text,
        bold=text.map(lambda _: False),
        columns_name=None,
        left_columns=("Dataset", "Source"),
    )


def _str_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Column labels as strings (NFE ints become "3", "4", ...), index name cleared."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    frame.index.name = None
    return frame


def to_markdown(table: Table) -> str:
    shown = table.text.where(~table.bold, "**" + table.text + "**")
    corner = f"{table.index_name} \\ {table.columns_name}" if table.columns_name else table.index_name
    shown = shown.rename_axis(corner)
    return shown.to_markdown(disable_numparse=True, colalign=table.alignments())


def _styler(table: Table, bold_props: str, escape: str) -> pd.io.formats.style.Styler:
    """Styled table; without a column-axis name the row labels become a plain first column, so
    the header is one row ("Setting | DDIM | ...") instead of two."""
    shown, mask = table.text, table.bold
    if table.columns_name is None:
        shown = shown.reset_index(names=table.index_name)
        mask = mask.reset_index(drop=True).assign(**{table.index_name: False})[shown.columns]
    else:
        shown = shown.rename_axis(index=table.index_name, columns=table.columns_name)
    styler = shown.style.format(escape=escape)
    styler = styler.format_index(escape=escape, axis=0).format_index(escape=escape, axis=1)
    if table.columns_name is None:
        styler = styler.hide(axis="index")
    mask = mask.set_axis(shown.index).set_axis(shown.columns, axis=1)
    return styler.apply(lambda _: mask.map(lambda b: bold_props if b else ""), axis=None)


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (no float environment), ready for ``\\input``; text is LaTeX-escaped."""
    spec = "".join(a[0] for a in table.alignments())
    latex = _styler(table, "textbf:--rwrap;", "latex").to_latex(hrules=True, column_format=spec)
    return latex.replace("±", r"$\pm$").replace(DISAGREE_MARK, r"$\neq$")


def to_html(table: Table, table_id: str) -> str:
    styler = _styler(table, "font-weight: bold;", "html").set_uuid(table_id)
    return styler.set_table_attributes('class="results"').to_html(cell_ids=False)

