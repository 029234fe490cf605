"""How long a plan will take, for --dry-run: costs timed just now on this machine, then scaled.

bench.plan already counts every denoiser evaluation a plan makes, by purpose. For each analytic
dataset this module times, on the run's device and dtype, one ddim solve of a batch (seconds per
sample and evaluation, the solver's own arithmetic included), one metric update (seconds per
scored sample) and one Frechet distance (seconds per cell), and multiplies them by the plan's
counts. A timing taken now, on the machine that will run the plan, follows its CPU, thread count
and load, which fixed figures in a table cannot. The distance is timed at most at
``_DISTANCE_DIM`` dimensions and scaled as d^3 beyond (its matrix products and eigenvalues),
which keeps the dry run to a few seconds on 3072-d data.

Left out: PAS's coordinate search between its denoiser evaluations (under a fifth of the toy
grid) and checkpoint datasets, whose network --dry-run does not load (they get no estimate).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import solvers
from bench.metrics.frechet import FrechetAccumulator, FrechetReference, flatten_features
from bench.models.spec import DatasetSpec

# Largest batch timed (cells' batches are used up to this size) and the NFE of the timed solve.
_CALIBRATION_BATCH = 1000
_CALIBRATION_NFE = 2
_DISTANCE_DIM = 1024


@dataclass(frozen=True)
class Costs:
    """Seconds per unit of work of one dataset, measured on this machine."""

    evaluation_s: float  # per sample and denoiser evaluation
    metric_sample_s: float  # per sample streamed into the metric
    metric_cell_s: float  # per Frechet distance (one per cell, plus one per seed block)
    metric_setup_s: float  # once per dataset: the reference's square root


# A cell with seed blocks takes float32 eigenvectors and two more products besides the distance's
# eigenvalue problem (bench.metrics.frechet): about two distances' work (4.3 s against 2.2 s at 3072
# dimensions on the project's 2-core machine, moment sums aside).
BLOCKED_DISTANCES = 2


@dataclass(frozen=True)
class Work:
    """What a plan asks of one dataset, and the dtype and batch size it runs with."""

    dataset: DatasetSpec
    dtype: str
    batch_size: int
    evaluations: int
    scored_samples: int
    distances: int  # in Frechet distances: one per cell, BLOCKED_DISTANCES with seed blocks


def seconds(costs: Costs, work: Work) -> float:
    """Estimated wall-clock of ``work`` at ``costs``."""
    return (work.evaluations * costs.evaluation_s + work.scored_samples * costs.metric_sample_s
            + work.distances * costs.metric_cell_s + costs.metric_setup_s)


def _best_time(function: Callable[[], object], device: torch.device, repeats: int = 2) -> float:
    """The shortest of ``repeats`` timed calls (the first one also warms up)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best


def calibrate(spec: DatasetSpec, dtype: str, batch_size: int, device: torch.device) -> Costs:
    """Time one solve, one metric update and one distance of an analytic dataset."""
    torch_dtype = getattr(torch, dtype)  # the grid's dtype names are torch's
    denoiser = spec.build(device=device, dtype=torch_dtype)
    batch = min(batch_size, _CALIBRATION_BATCH)
    latents, labels = solvers.latents_for_seeds(range(batch), denoiser.shape, dtype=torch_dtype,
                                                device=device, label_dim=denoiser.label_dim)
    solve_s = _best_time(lambda: solvers.sample(denoiser, latents, "ddim", _CALIBRATION_NFE,
                                                class_labels=labels), device)
    mu, cov = spec.exact_stats()
    accumulator = FrechetAccumulator(flatten_features, FrechetReference(mu, cov), device=device)
    update_s = _best_time(lambda: accumulator.update(latents), device)
    # A distance at min(d, _DISTANCE_DIM) dimensions: the first call also takes the reference's
    # square root (once per dataset in a run), the second is what every further cell costs.
    dim = min(len(mu), _DISTANCE_DIM)
    small_mu, small_cov = torch.as_tensor(mu)[:dim], torch.as_tensor(cov)[:dim, :dim]
    reference = FrechetReference(small_mu, small_cov)
    began = time.perf_counter()
    reference.distance(small_mu, small_cov)
    first_s = time.perf_counter() - began
    cell_s = _best_time(lambda: reference.distance(small_mu, small_cov), torch.device("cpu"))
    scale = (len(mu) / dim) ** 3
    return Costs(evaluation_s=solve_s / (batch * _CALIBRATION_NFE), metric_sample_s=update_s / batch,
                 metric_cell_s=cell_s * scale, metric_setup_s=max(first_s - cell_s, 0.0) * scale)


def _duration(value: float) -> str:
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def describe(works: list[Work], device: torch.device) -> list[str]:
    """The --dry-run lines: the total, then one line per dataset (none for an empty plan)."""
    lines, total, unknown = [], 0.0, []
    for work in works:
        name = work.dataset.name
        if work.dataset.model_url:
            unknown.append(name)
            lines.append(f"  {name}: no estimate (checkpoint network; --dry-run loads none)")
            continue
        costs = calibrate(work.dataset, work.dtype, work.batch_size, device)
        part = seconds(costs, work)
        total += part
        lines.append(f"  {name}: {_duration(part)} ({work.evaluations:,} evaluations at "
                     f"{costs.evaluation_s * 1e6:.3g} us, metric {work.scored_samples:,} samples "
                     f"at {costs.metric_sample_s * 1e6:.3g} us + {work.distances} distances x "
                     f"{costs.metric_cell_s:.2g} s)")
    if not lines:
        return []
    if len(unknown) == len(works):
        head = "estimated time: no estimate"
    else:
        scope = f" without {', '.join(unknown)}" if unknown else ""
        head = (f"estimated time{scope}: {_duration(total)} on this {device.type} at its present "
                "load (costs timed just now; PAS coordinate search not included)")
    return [head, *lines]
