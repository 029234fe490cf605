"""``python -m bench.run``: run a benchmark grid and store one row per cell.

For every cell the seeds 0..num_samples-1 are split over the ranks (torchrun) and over batches;
each sample starts from its own seed's latent, so the numbers depend on neither. Samples stream
through the metric's float64 moment sums, which are added across ranks; rank 0 alone computes the
metric, saves the cell's preview and appends the row. See ``--help`` and bench/grids.py.
"""
from __future__ import annotations

import os
import resource
import signal
import sys
import time
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from tqdm import tqdm

import pas
import solvers
from bench import distributed, methods, timing
from bench.cli import parse_args
from bench.distributed import World
from bench.errors import UserError
from bench.grids import load_grid
from bench.metrics.frechet import FrechetAccumulator, FrechetReference, flatten_features, rmse
from bench.models.registry import get_dataset
from bench.models.spec import DatasetSpec
from bench.plan import (
    DEFAULT_DISK,
    PREVIEW_COUNT,
    REFERENCE_NFE,
    REFERENCE_SCHEDULE,
    REFERENCE_SOLVER,
    Cell,
    Overrides,
    TeacherDisk,
    build_plan,
    canonical_hash,
    cell_costs,
    check_references,
    describe_plan,
    select_shard,
    teacher_group,
    teacher_solves,
)
from bench.progress import ProgressLog
from bench.results import RunFile, ensure_writable, existing_hashes, new_run_id, provenance, utc_now

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Latents kept in memory for reuse by the next cells of the same dataset (see Runner._latents).
LATENT_STORE_BYTES = 1 << 30
# Test hook: after this many cells, the next one interrupts itself (SIGINT) after its first batch.
FAULT_ENV = "PASBENCH_FAULT_AFTER_ROWS"


def resolve_device(choice: str, world: World) -> torch.device:
    """cpu, or this rank's CUDA device; asking for CUDA without one is a UserError."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_peak_mb(memory: dict | None) -> float | None:
    """A PAS fit's peak memory in MiB from its artifact (pas.memory.PeakMemory): CUDA's peak
    allocation on a GPU, the host's peak anonymous resident memory (RssAnon) on the CPU; None for
    artifacts written before fits recorded it."""
    if not memory:
        return None
    peak = memory["device_peak"] if memory["device"] == "cuda" else memory["host_rss_anon_peak"]
    return None if peak is None else peak / 2**20


def _show_progress(args: Namespace, world: World) -> bool:
    """Progress bars: on rank 0, unless --quiet, when stderr is a terminal."""
    return world.is_main and not args.quiet and sys.stderr.isatty()


def _log_progress(args: Namespace, world: World) -> bool:
    """Progress lines (bench.progress): on rank 0, unless --quiet, when stderr is not a terminal."""
    return world.is_main and not args.quiet and not sys.stderr.isatty()


def _batches(seeds: range, size: int) -> list[range]:
    """``seeds`` cut into consecutive ranges of at most ``size``."""
    return [range(start, min(start + size, seeds.stop)) for start in range(seeds.start, seeds.stop, size)]


def _ahead(function: Callable, items: list, enabled: bool) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, function(item))``; when ``enabled``, a worker thread computes the next
    item's value while the caller works on this one (torch releases the GIL in its kernels)."""
    if not enabled:
        yield from ((item, function(item)) for item in items)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(function, item) for item in items[:1]]
        for index, item in enumerate(items):
            value = pending.pop().result()
            pending.extend(pool.submit(function, nxt) for nxt in items[index + 1:index + 2])
            yield item, value


class ImageSink:
    """Writes every sample of a cell for --save-images: PNGs for [C, H, W] images (latent models'
    samples decoded first), else .npy batches."""

    def __init__(self, folder: Path, cell: Cell, denoiser: Any) -> None:
        self.folder = folder / cell.config_hash
        self.folder.mkdir(parents=True, exist_ok=True)
        self.decode = getattr(denoiser, "decode", None)
        shape = denoiser.shape
        self.as_png = self.decode is not None or (len(shape) == 3 and shape[0] in (1, 3))

    def write(self, seeds: range, samples: torch.Tensor) -> None:
        if self.decode is not None:
            samples = self.decode(samples)
        if not self.as_png:
            np.save(self.folder / f"{seeds.start:06d}-{seeds.stop - 1:06d}.npy", samples.cpu().numpy())
            return
        from PIL import Image

        pixels = (samples * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        for seed, image in zip(seeds, pixels.numpy()):
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                self.folder / f"{seed:06d}.png")


class Runner:
    """Runs cells one after another, keeping what cells share (denoisers, metrics, PAS fits)."""

    def __init__(self, args: Namespace, world: World, device: torch.device, grid_name: str,
                 run_file: RunFile, cache_dir: Path, disk: TeacherDisk = DEFAULT_DISK) -> None:
        self.args = args
        self.world = world
        self.device = device
        self.grid_name = grid_name
        self.run_file = run_file
        self.cache_dir = cache_dir
        self.disk = disk
        self.progress = _show_progress(args, world)
        self.log = ProgressLog(_log_progress(args, world))
        self.fixed = {**provenance(), "device": device_name(device)} if world.is_main else {}
        self.cells_done = 0
        self.fault_after = int(os.environ[FAULT_ENV]) if FAULT_ENV in os.environ else None
        self._denoisers: dict[tuple, Any] = {}
        self._metrics: dict[str, tuple[Callable, FrechetReference]] = {}
        self._references: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._artifacts: dict[str, Any] = {}
        # What the method axis's other fitters made (bench.methods): GITS schedules and AMED
        # predictors.
        self.fitted: dict[tuple, Any] = {}
        self._cells: list[Cell] = []
        # Per teacher group, its solves (bench.plan.teacher_solves); per fit not yet stored, the
        # solve it reads (deleted once none of them is left, unless kept).
        self._solves: dict[tuple, list[tuple[list[Cell], list[pas.TeacherRequest]]]] = {}
        self._teacher_of: dict[str, Any] = {}
        self._inception: Any = None
        self._clip: Any = None
        self._latent_store: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @property
    def cells(self) -> list[Cell]:
        """The cells this run was given (bench.methods shares AMED teachers among them)."""
        return self._cells

    # ----- what cells share -------------------------------------------------------------------
    def denoiser(self, cell: Cell) -> Any:
        """The cell's denoiser, built once per (dataset, dtype, precision, text conditioning)."""
        key = (cell.dataset, cell.dtype, cell.precision, canonical_hash(cell.conditioning or {}))
        if key not in self._denoisers:
            spec = get_dataset(cell.dataset)
            extra = ({"model_path": self.args.model_path, "precision": cell.precision,
                      "cache_dir": self.cache_dir, "conditioning": cell.conditioning}
                     if spec.model_url else {})
            self._denoisers[key] = spec.build(device=self.device, dtype=DTYPES[cell.dtype], **extra)
        return self._denoisers[key]

    def metric(self, cell: Cell) -> tuple[Callable, FrechetReference]:
        """Feature map and reference statistics: exact data statistics (fd) or Inception (fid)."""
        spec = get_dataset(cell.dataset)
        if spec.name not in self._metrics:
            if spec.metric == "fd":
                self._metrics[spec.name] = (flatten_features, FrechetReference(*spec.exact_stats()))
            else:
                self._metrics[spec.name] = self._fid_metric(spec, cell.reference)
        return self._metrics[spec.name]

    def accumulator(self, cell: Cell) -> Any:
        """The cell's streaming metric: FD/FID, plus CLIP score for text-to-image datasets."""
        features, reference = self.metric(cell)
        if cell.conditioning is None:
            return FrechetAccumulator(features, reference, device=self.device, blocks=cell.blocks)
        from bench.metrics.clip_score import load_clip_score
        from bench.metrics.text_image import TextImageAccumulator

        denoiser = self.denoiser(cell)  # before CLIP: a model that cannot load stops the cell first
        if self._clip is None:
            self._clip = load_clip_score(self.args.clip_model, device=self.device,
                                         cache_dir=self.cache_dir)
        self._clip.reset()
        return TextImageAccumulator(denoiser, features, reference, self._clip,
                                    device=self.device, blocks=cell.blocks)

    def _fid_metric(self, spec: DatasetSpec, source: str | None) -> tuple[Callable, FrechetReference]:
        from bench.metrics import inception
        from bench.metrics.reference import reference_stats

        if self._inception is None:
            self._inception = inception.load_inception(weights=self.args.inception_weights,
                                                       device=self.device)
        mu, sigma = reference_stats(spec, ref_stats=source, cache_dir=self.cache_dir)
        features = partial(inception.inception_features, self._inception, resize=spec.fid_resize)
        return features, FrechetReference(mu, sigma)

    def reference_solve(self, cell: Cell, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Heun-200 on the polynomial schedule from seeds 0..count-1: the final states, and for
        2-D data all states of the first PREVIEW_COUNT seeds (else None). Shared by all cells."""
        key = (cell.dataset, cell.dtype, cell.precision, count)
        if key not in self._references:
            planar = tuple(self.denoiser(cell).shape) == (2,)
            final, states = self._solve(cell, range(count), None, reference=True, trajectory=planar)
            self._references[key] = (final, states[:, :PREVIEW_COUNT] if planar else None)
        return self._references[key]

    def dtype(self, cell: Cell) -> torch.dtype:
        return DTYPES[cell.dtype]

    def barrier(self) -> None:
        distributed.barrier(self.world)

    def artifact(self, cell: Cell, schedule: str | torch.Tensor | None = None) -> Any:
        """The cell's PAS artifact: from cache_dir/artifacts/<key>.json, else fitted by rank 0 on
        ``schedule`` (default: the cell's; GITS + PAS passes the GITS times)."""
        if cell.pas_key not in self._artifacts:
            path = self.cache_dir / "artifacts" / f"{cell.pas_key}.json"
            if self.world.is_main and not path.exists():
                label = f"{cell.dataset} {cell.solver} nfe={cell.nfe}"
                self.log.fit_started(label)
                began = time.perf_counter()
                fitted = self._fit(cell, cell.schedule if schedule is None else schedule)
                self.log.fit_finished(label, fitted, time.perf_counter() - began)
                fitted.save(path)
                self._release_teacher(cell)
            distributed.barrier(self.world)
            # Every rank (rank 0 included) samples with the loaded file, so they agree exactly.
            try:
                self._artifacts[cell.pas_key] = pas.PASArtifact.load(path)
            except ValueError as exc:
                raise UserError(f"{exc}; delete {path} to fit it again") from None
        return self._artifacts[cell.pas_key]

    def fit_denoiser(self, cell: Cell) -> Any:
        """The denoiser PAS fits on: text-to-image models use their teacher captions, disjoint
        from the evaluation ones."""
        denoiser = self.denoiser(cell)
        teacher = getattr(denoiser, "teacher_view", None)
        return teacher() if teacher else denoiser

    def _share_teacher(self, cell: Cell) -> None:
        """Before the first fit of a teacher solve: one solve for every fit of its part of the
        teacher group that this run still has to make (bench.plan.teacher_solves: the whole
        group, or consecutive parts when one solve would keep too much on disk)."""
        if cell.pas_key in self._teacher_of:
            return
        group = teacher_group(cell)
        denoiser = self.fit_denoiser(cell)
        if group not in self._solves:
            waiting = [cell, *(c for c in self._cells if c.pas and teacher_group(c) == group
                               and not (self.cache_dir / "artifacts" / f"{c.pas_key}.json").exists())]
            self._solves[group] = teacher_solves(denoiser, waiting, self.disk.max_bytes,
                                                 methods.searched_schedules(self, waiting))
        requests = next(part for fits, part in self._solves[group]
                        if cell.pas_key in {fit.pas_key for fit in fits})
        settings = cell.pas_settings
        self.log.teacher_started(cell.dataset, len(requests))
        try:
            teacher = pas.teacher_states(
                denoiser, requests,
                seeds=pas.teacher_seeds(settings["trajectories"], settings["validate"],
                                        settings["holdout"]),
                teacher=settings["teacher"], dtype=DTYPES[cell.dtype], device=self.device,
                batch_size=cell.batch_size, cache_dir=self.cache_dir, progress=self.progress,
                prune=not self.disk.keep)
        except ValueError as exc:
            raise UserError(f"PAS teacher for {cell.dataset}: {exc}") from None
        self.log.teacher_finished(cell.dataset, teacher)
        # Every fit still to make that this solve serves reads it (a stored solve found in the
        # cache may serve later parts too, which then need no solve of their own).
        for fits, part in self._solves[group]:
            for fit, request in zip(fits, part):
                if fit.pas_key not in self._teacher_of and teacher.serves(request):
                    self._teacher_of[fit.pas_key] = teacher

    def _release_teacher(self, cell: Cell) -> None:
        """After a fit is stored: delete its teacher solve from the cache once no fit of this run
        still reads it, unless solves are kept (--keep-teacher)."""
        teacher = self._teacher_of.pop(cell.pas_key, None)
        if teacher is None or self.disk.keep:
            return
        if all(other.folder != teacher.folder for other in self._teacher_of.values()):
            teacher.remove()

    def _fit(self, cell: Cell, schedule: str | torch.Tensor) -> Any:
        self._share_teacher(cell)
        try:
            return pas.fit(self.fit_denoiser(cell), cell.solver, cell.nfe, schedule=schedule,
                           cache_dir=self.cache_dir, device=self.device, dtype=DTYPES[cell.dtype],
                           dataset=cell.dataset, batch_size=cell.batch_size,
                           progress=self.progress, **cell.pas_settings, **cell.options)
        except ValueError as exc:
            raise UserError(f"PAS fit for {cell.dataset} {cell.solver} nfe={cell.nfe}: {exc}") from None

    # ----- one cell ---------------------------------------------------------------------------
    def _maybe_fault(self) -> None:
        if self.fault_after is not None and self.cells_done >= self.fault_after:
            signal.raise_signal(signal.SIGINT)

    def _latents(self, cell: Cell, seeds: range) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) of ``seeds`` on the device.

        Every cell of a dataset uses the same seeds, and drawing them one generator at a time is
        the runner's largest cost besides the model and the metric, so the batches of the dataset
        being run are kept on the CPU while they fit in LATENT_STORE_BYTES.
        """
        denoiser = self.denoiser(cell)
        key = (cell.dataset, cell.dtype, seeds.start, seeds.stop)
        if key in self._latent_store:
            return tuple(t if t is None else t.to(self.device) for t in self._latent_store[key])
        drawn = _draw(denoiser, seeds, DTYPES[cell.dtype])
        if any(other[:2] != key[:2] for other in self._latent_store):
            self._latent_store.clear()
        stored = sum(t.nbytes for pair in self._latent_store.values() for t in pair if t is not None)
        if stored + sum(t.nbytes for t in drawn if t is not None) <= LATENT_STORE_BYTES:
            self._latent_store[key] = drawn
        return tuple(t if t is None else t.to(self.device) for t in drawn)

    def _batch(self, cell: Cell, start: tuple[torch.Tensor, torch.Tensor | None],
               sampling: methods.Sampling | None, *, reference: bool = False,
               trajectory: bool = False) -> Any:
        """The cell's solver as its method samples (or the Heun-200 reference) from
        ``start = (latents, labels)``."""
        latents, labels = start
        if sampling is not None and sampling.sample is not None:  # AMED (bench.methods)
            return sampling.sample(self.denoiser(cell), latents, labels, trajectory)
        if reference:
            return solvers.sample(self.denoiser(cell), latents, REFERENCE_SOLVER, REFERENCE_NFE,
                                  REFERENCE_SCHEDULE, class_labels=labels,
                                  return_trajectory=trajectory)
        return solvers.sample(self.denoiser(cell), latents, cell.solver, cell.nfe,
                              sampling.schedule, correction=sampling.correction,
                              class_labels=labels,
                              return_trajectory=trajectory, **cell.options)

    def _solve(self, cell: Cell, seeds: range, sampling: methods.Sampling | None, *,
               reference: bool = False,
               trajectory: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final states, trajectory or None) of ``seeds`` on the CPU, in batches of the cell's size."""
        finals, paths = [], []
        for batch in _batches(seeds, cell.batch_size):
            result = self._batch(cell, self._latents(cell, batch), sampling, reference=reference,
                                 trajectory=trajectory)
            final, path = result if trajectory else (result, None)
            finals.append(final.cpu())
            paths.append(path.cpu() if trajectory else None)
        return torch.cat(finals), torch.cat(paths, dim=1) if trajectory else None

    def _stream(self, cell: Cell, sampling: methods.Sampling,
                accumulator: FrechetAccumulator) -> tuple[timing.BatchClock, float]:
        """Sample this rank's seeds batch by batch into the accumulator; (batch clock, metric_s)."""
        batches = _batches(distributed.seed_range(cell.num_samples, self.world), cell.batch_size)
        sink = (ImageSink(Path(self.args.save_images), cell, self.denoiser(cell))
                if self.args.save_images else None)
        clock = timing.BatchClock(len(batches), partial(_sync, self.device))
        metric_s = 0.0
        label = f"{cell.dataset} {cell.solver} nfe={cell.nfe}" + (
            "" if cell.method == "base" else f" {cell.method}")
        bar = tqdm(total=len(batches), desc=label, unit="batch", leave=False, disable=not self.progress)
        # On a GPU the CPU is idle while sampling: draw the next batch's latents meanwhile.
        for batch, start in _ahead(partial(self._latents, cell), batches, self.device.type == "cuda"):
            with clock.batch(len(batch)):
                samples = self._batch(cell, start, sampling)
            began = time.perf_counter()
            accumulator.update(samples, start[1], seeds=batch)
            _sync(self.device)
            metric_s += time.perf_counter() - began
            if sink is not None:
                sink.write(batch, samples)
            bar.update()
            self._maybe_fault()
        bar.close()
        return clock, metric_s

    def _preview(self, cell: Cell, sampling: methods.Sampling) -> tuple[str, float | None]:
        """Save the cell's preview arrays and compute rmse_to_teacher; (preview name, rmse)."""
        planar = tuple(self.denoiser(cell).shape) == (2,)
        count = max(min(PREVIEW_COUNT, cell.num_samples), cell.rmse_samples)
        samples, trajectory = self._solve(cell, range(count), sampling, trajectory=planar)
        # Latent models store small decoded images instead (what the report's sample grids show).
        thumbnails = getattr(self.denoiser(cell), "thumbnails", None)
        shown = samples[:PREVIEW_COUNT]
        arrays = {"samples": (thumbnails(shown, cell.batch_size) if thumbnails else shown).float().numpy()}
        error = None
        if planar or cell.rmse_samples:
            teacher_final, teacher_states = self.reference_solve(cell, count)
            if cell.rmse_samples:
                error = rmse(samples[:cell.rmse_samples], teacher_final[:cell.rmse_samples])
            if planar:
                arrays["trajectory"] = trajectory[:, :PREVIEW_COUNT].float().numpy()
                arrays["teacher"] = teacher_states.float().numpy()
        return self.run_file.save_preview(cell.config_hash, arrays), error

    def run_cell(self, cell: Cell) -> dict | None:
        """Run one cell on every rank; rank 0 returns its row (others None)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        # The metric first: a missing reference file stops the cell before any sampling or fit.
        accumulator = self.accumulator(cell)
        if cell.conditioning is not None:
            self.denoiser(cell).prompts.check_evaluation(cell.num_samples, cell.pas)
        sampling = methods.prepare(self, cell)
        clock, metric_s = self._stream(cell, sampling, accumulator)
        began = time.perf_counter()
        distributed.sum_across(self.world, accumulator.sums())
        value = accumulator.compute() if self.world.is_main else float("nan")
        extra = accumulator.extra_fields() if self.world.is_main else {}
        metric_s += time.perf_counter() - began
        times = self._timing(clock)
        metric_s = distributed.max_across(self.world, metric_s, self.device)
        peak = distributed.max_across(self.world, _peak_mem_mb(self.device), self.device)
        if not self.world.is_main:
            return None
        preview, error = self._preview(cell, sampling)
        return self._row(cell, sampling, value, error, times, metric_s, peak, preview, extra)

    def _timing(self, clock: timing.BatchClock) -> dict:
        """This rank's timing fields, with the slowest rank's sampling time and a suspect flag
        raised when any rank's timing is suspect (the other fields are this rank's own)."""
        times = clock.fields(timing.DEFAULT_RULE, self.device.type)
        sample_s = distributed.max_across(self.world, times["sample_s"], self.device)
        timed = torch.tensor([float(times["timed_samples"])], dtype=torch.float64, device=self.device)
        distributed.sum_across(self.world, [timed])
        suspect = distributed.max_across(self.world, float(times["timing_suspect"]), self.device) > 0
        if suspect and not times["timing_suspect"]:
            times["timing_suspect_reason"] = "suspect on another rank"
        # As before warm-ups existed: the slowest rank's time over every rank's (timed) samples.
        return {**times, "sample_s": sample_s, "timed_samples": int(timed.item()),
                "s_per_sample": sample_s / timed.item(), "timing_suspect": suspect}

    def _row(self, cell: Cell, sampling: methods.Sampling, value: float, error: float | None,
             times: dict, metric_s: float, peak: float, preview: str, extra: dict) -> dict:
        artifact = sampling.artifact
        fit = {"pas_params": None, "pas_steps": None, "pas_fit_s": None, "teacher_s": None,
               "pas_holdout_gain": None, "pas_peak_mem_mb": None}
        if artifact is not None:
            fit = {"pas_params": artifact.n_params, "pas_steps": sorted(artifact.corrected),
                   "pas_fit_s": artifact.fit_seconds, "teacher_s": artifact.teacher_seconds,
                   "pas_holdout_gain": artifact.holdout_gain,
                   "pas_peak_mem_mb": _fit_peak_mb(artifact.memory)}
        return {
            "run_id": self.run_file.run_id, "created_at": utc_now(), **self.fixed,
            "grid": self.grid_name, "dataset": cell.dataset, "solver": cell.solver,
            "nfe": cell.nfe, "schedule": cell.schedule, "order": cell.options.get("order"),
            "options": cell.options, "pas": cell.pas, **fit, "pas_settings": cell.pas_settings,
            "num_samples": cell.num_samples, "seeds": cell.seeds, "batch_size": cell.batch_size,
            "world_size": self.world.world_size, "dtype": cell.dtype, "precision": cell.precision,
            "metric": cell.metric, "value": value, "rmse_to_teacher": error,
            **times, "metric_s": metric_s, "peak_mem_mb": peak, "preview": preview,
            "config_hash": cell.config_hash,
            # Network calls per sample (2 per NFE under guidance), CLIP score, text conditioning.
            "unet_evals": cell.nfe * getattr(self.denoiser(cell), "unet_evals_per_call", 1),
            "clip_score": extra.get("clip_score"), "conditioning": cell.conditioning,
            "fid_resize": get_dataset(cell.dataset).fid_resize if cell.metric == "fid" else None,
            # Error bars (bench.metrics.frechet): the metric without each seed block, its jackknife SE.
            "blocks": cell.blocks, "value_blocks": extra.get("value_blocks"),
            "value_se": extra.get("value_se"),
            # The method axis (bench.methods): what its fitters (besides PAS) used and reported.
            "method": cell.method, "method_settings": cell.method_settings,
            "method_fit": sampling.fits or None,
        }

    def run(self, cells: list[Cell]) -> list[dict]:
        """Run ``cells`` in order, appending each row as soon as it exists."""
        rows = []
        self._cells = cells
        # Planned costs (a few seconds of timing on analytic datasets) only for the log's ETA.
        costs = (cell_costs(cells, self.cache_dir, self.device, self.disk) if self.log.enabled
                 else None)
        timed = {c.dataset for c in cells if not get_dataset(c.dataset).model_url}
        self.log.start(len(cells), costs and [(c.dataset, cost) for c, cost in zip(cells, costs)],
                       timed)
        for cell in tqdm(cells, desc="grid", unit="cell", disable=not self.progress):
            began = time.perf_counter()
            row = self.run_cell(cell)
            if row is not None:
                self.run_file.append(row)
                rows.append(row)
                self.log.cell_finished(row, time.perf_counter() - began)
            self.cells_done += 1
        return rows


def _draw(denoiser: Any, seeds: range, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents of ``seeds`` and their labels: drawn per seed, or the denoiser's own per-seed
    conditioning (a text-to-image model's prompt for each seed) when it has one."""
    per_seed = getattr(denoiser, "labels_for_seeds", None)
    latents, labels = solvers.latents_for_seeds(seeds, denoiser.shape, dtype=dtype, device="cpu",
                                                label_dim=0 if per_seed else denoiser.label_dim)
    return latents, per_seed(seeds, dtype=dtype) if per_seed else labels


def summary(rows: list[dict], skipped: int) -> str:
    """A plain-text table of the rows this run wrote."""
    table = [[r["dataset"], r["solver"], r["nfe"], r["method"], r["metric"],
              r["value"], r["rmse_to_teacher"], r["pas_params"], r["sample_s"]] for r in rows]
    headers = ["dataset", "solver", "nfe", "method", "metric", "value", "rmse", "pas_params",
               "sample_s"]
    text = tabulate(table, headers=headers, floatfmt=".4g", missingval="-") if rows else "no cells run"
    suspect = sum(bool(r["timing_suspect"]) for r in rows)
    if suspect:
        text += (f"\n{suspect} cell(s) timed on a busy machine: timing_suspect in the rows says why "
                 "(bench/timing.py)")
    return text + (f"\n{skipped} cell(s) skipped: already in the store (use --force to rerun)"
                   if skipped else "")


def _overrides(args: Namespace) -> Overrides:
    return Overrides(
        datasets=args.datasets, solvers=args.solvers, nfe=args.nfe, pas=args.pas,
        num_samples=args.num_samples, batch_size=args.batch_size, dtype=args.dtype,
        precision=args.precision, model_path=args.model_path, ref_stats=args.ref_stats,
        inception_weights=args.inception_weights, guidance=args.guidance, prompt=args.prompt,
        captions=args.captions, clip_model=args.clip_model, blocks=args.blocks,
        methods=args.methods,
    )


def _teacher_disk(args: Namespace) -> TeacherDisk:
    """--teacher-disk and --keep-teacher. Shards keep their solves: another shard's process may
    still read a solve whose fits this one has stored."""
    return TeacherDisk(args.teacher_disk * 2**30, keep=args.keep_teacher or args.shard[1] > 1)


def _cache_dir(args: Namespace) -> Path:
    from pas.cache import default_cache_dir

    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def execute(args: Namespace) -> int:
    """Validate everything, then run (or describe, with --dry-run) the selected cells."""
    grid = load_grid(args.grid)
    cells = select_shard(build_plan(grid, _overrides(args)), args.shard)
    out, cache_dir = Path(args.out), _cache_dir(args)
    world = distributed.launched_world()
    ensure_writable(out)
    if args.save_images:
        ensure_writable(Path(args.save_images))
    done = set() if args.force else existing_hashes(out)
    todo = [cell for cell in cells if cell.config_hash not in done]
    device = resolve_device(args.device, world)
    if args.dry_run:
        if world.is_main:
            print(describe_plan(cells, todo, _overrides(args), cache_dir, device,
                                _teacher_disk(args)))
        return 0
    check_references(todo)
    world = distributed.init_world(device)
    try:
        # Rank 0's view of the store decides, so every rank runs the same cells.
        wanted = distributed.from_main(world, [cell.config_hash for cell in todo])
        todo = [cell for cell in cells if cell.config_hash in set(wanted)]
        run_file = RunFile(out, distributed.from_main(world, new_run_id()))
        runner = Runner(args, world, device, grid.name, run_file, cache_dir, _teacher_disk(args))
        rows = runner.run(todo)
    finally:
        distributed.close_world(world)
    if world.is_main:
        print(summary(rows, len(cells) - len(todo)))
        if rows:
            print(f"rows: {run_file.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return execute(parse_args(argv))
    except UserError as exc:
        print(f"bench.run: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.run: interrupted; finished cells are stored, rerun the same command to "
              "complete the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
