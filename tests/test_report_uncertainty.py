"""PAS-gain verdicts from paired seed blocks, and the +- columns of the report's tables."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from store_factory import make_row

import solvers
from bench.metrics.frechet import FrechetAccumulator, FrechetReference, flatten_features
from bench.models.registry import get_dataset
from report.plots import metric_vs_nfe
from report.tables import (
    gain_table,
    metric_table,
    to_latex,
    to_markdown,
    with_labels,
    yardsticks_disagree,
)
from report.uncertainty import Gain, paired_gain

SEEDS = range(600)


def _scored(samples: torch.Tensor, reference: FrechetReference) -> tuple[float, list[float]]:
    acc = FrechetAccumulator(flatten_features, reference, blocks=10)
    acc.update(samples, seeds=SEEDS)
    return acc.compute(), acc.extra_fields()["value_blocks"]


@pytest.fixture(scope="module")
def gmm2d():
    spec = get_dataset("gmm2d")
    denoiser = spec.build(device="cpu", dtype=torch.float64)
    latents, _ = solvers.latents_for_seeds(SEEDS, denoiser.shape, dtype=torch.float64)
    return denoiser, latents, FrechetReference(*spec.exact_stats())


def test_a_clearly_better_solver_gains_significantly(gmm2d):
    denoiser, latents, reference = gmm2d
    base = _scored(solvers.sample(denoiser, latents, "ddim", 4), reference)
    better = _scored(solvers.sample(denoiser, latents, "ddim", 10), reference)
    gain = paired_gain(base[0], better[0], base[1], better[1])
    assert gain.value > 0.5 and gain.significant
    assert 0 < gain.se < gain.value / 5


def test_a_perturbed_self_comparison_is_not_significant(gmm2d):
    denoiser, latents, reference = gmm2d
    nudge = 1e-3 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(7),
                               dtype=torch.float64)
    base = _scored(solvers.sample(denoiser, latents, "ddim", 5), reference)
    same = _scored(solvers.sample(denoiser, latents + nudge, "ddim", 5), reference)
    gain = paired_gain(base[0], same[0], base[1], same[1])
    assert abs(gain.value) < 1e-2 and gain.se > 0 and not gain.significant


def test_rows_without_blocks_give_a_gain_without_a_verdict():
    gain = paired_gain(2.0, 1.0, None, float("nan"))
    assert (gain.value, gain.se, gain.significant) == (0.5, None, None)


def _cells_with_blocks() -> pd.DataFrame:
    """ddim at NFE 4, base and PAS; PAS halves the FD; block values scatter by +-1%."""
    rows = []
    for pas in (False, True):
        row = make_row("gmm2d", "ddim", 4, pas)
        spread = [0.01 * ((k * (3 if pas else 7)) % 10 - 4.5) / 4.5 for k in range(10)]
        rows.append({**row, "value_blocks": [row["value"] * (1 + s) for s in spread],
                     "value_se": 0.0123})
    return with_labels(pd.DataFrame(rows))


def test_tables_show_standard_errors_and_verdicts():
    cells = _cells_with_blocks()
    metric = metric_table(cells)
    assert metric.text.loc["DDIM", "4"] == "7.50 ± 0.012"
    assert bool(metric.bold.loc["DDIM + PAS", "4"]) and "$\\pm$" in to_latex(metric)
    gain = gain_table(cells)
    text = gain.text.loc["DDIM + PAS", "4"]
    assert text.startswith("+50.0% ± ") and bool(gain.bold.loc["DDIM + PAS", "4"])
    assert "**+50.0% ±" in to_markdown(gain) and "n.s." not in to_markdown(gain)


def test_a_gain_inside_its_noise_is_marked_not_significant():
    cells = _cells_with_blocks()
    base = cells[~cells["pas"]].iloc[0]
    wobble = [1 + 1e-3 * ((k * 3) % 10 - 4.5) for k in range(10)]
    fitted = cells["pas"].to_numpy().nonzero()[0][0]
    cells.at[fitted, "value"] = base["value"] * (1 + 1e-4)
    cells.at[fitted, "value_blocks"] = [v * w for v, w in zip(base["value_blocks"], wobble)]
    gain = gain_table(cells)
    assert gain.text.loc["DDIM + PAS", "4"].endswith("(n.s.)") and not gain.bold.loc["DDIM + PAS", "4"]


def test_metric_plot_draws_one_error_bar_per_point_with_an_se(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("matplotlib.axes.Axes.errorbar",
                        lambda self, x, y, yerr, **kw: drawn.append(list(yerr)))
    cells = _cells_with_blocks()
    figure = metric_vs_nfe(cells, "gmm2d", tmp_path)
    assert drawn == [[0.0123, 0.0123]] and "standard error" in figure.caption
    assert "standard error" not in metric_vs_nfe(cells.drop(columns="value_se"), "gmm2d",
                                                 tmp_path).caption


def _yardstick_cells(teacher_gain: float) -> pd.DataFrame:
    """ddim at NFE 4 where PAS worsens FD by 20% (significantly), with this held-out gain."""
    cells = _cells_with_blocks()
    base = cells[~cells["pas"]].iloc[0]
    fitted = cells["pas"].to_numpy().nonzero()[0][0]
    cells.at[fitted, "value"] = 1.2 * base["value"]
    cells.at[fitted, "value_blocks"] = [1.2 * v for v in base["value_blocks"]]
    return cells.assign(pas_holdout_gain=[None, teacher_gain])


def test_gain_table_marks_where_fd_and_the_teacher_distance_disagree():
    gain = gain_table(_yardstick_cells(0.08))
    text = gain.text.loc["DDIM + PAS", "4"]
    assert text.startswith("-20.0% ± ") and text.endswith("; teacher +8.0% ≠")
    assert bool(gain.bold.loc["DDIM + PAS", "4"])  # the FD change itself is significant
    assert "$\\neq$" in to_latex(gain)
    agree = gain_table(_yardstick_cells(-0.05)).text.loc["DDIM + PAS", "4"]
    assert agree.endswith("; teacher -5.0%") and "≠" not in agree


def test_no_mark_where_signs_agree_or_the_fd_change_is_not_significant():
    cells = _cells_with_blocks().assign(pas_holdout_gain=[None, 0.3])
    text = gain_table(cells).text.loc["DDIM + PAS", "4"]  # FD +50%, teacher +30%
    assert text.endswith("; teacher +30.0%")
    assert not yardsticks_disagree(paired_gain(1.0, 1.2, None, None), 0.1)  # no verdict
    assert not yardsticks_disagree(Gain(-0.2, 0.3, False), 0.1)  # n.s.
    assert yardsticks_disagree(Gain(-0.2, 0.01, True), 0.1)
    assert not yardsticks_disagree(Gain(-0.2, 0.01, True), None)


def test_a_base_cell_without_its_pas_cell_leaves_a_blank_gain():
    """A store still being filled: iPNDM at NFE 6 has its base cell only."""
    keys = [(s, n, p) for s in ("ddim", "ipndm") for n in (4, 6) for p in (False, True)]
    rows = [make_row("gmm2d", *key) for key in keys if key != ("ipndm", 6, True)]
    gain = gain_table(with_labels(pd.DataFrame(rows)))
    assert gain.text.loc["iPNDM + PAS", "6"] == "" and not gain.bold.loc["iPNDM + PAS", "6"]
    assert gain.text.loc["DDIM + PAS", "6"] == "+50.0%"
