"""From a grid (plus command-line overrides) to the list of cells to run, fully validated.

A cell is one (dataset, solver, NFE, method) combination (method: base, PAS, or a peer of
bench.methods) with every setting resolved:
schedule, solver options, PAS settings, sample count, dtype. Its ``config_hash`` is the sha256 of
the canonical JSON of exactly what determines its numbers, so the same measurement has the same
hash on any machine, batch size, device or world size, and a store can tell which cells are done.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import torch

import pas
from bench import estimate, methods
from bench.errors import UserError
from bench.grids import Grid
from bench.metrics.frechet import DEFAULT_BLOCKS, MIN_SAMPLES
from bench.models.registry import dataset_names, get_dataset
from bench.models.spec import DatasetSpec
from pas.adaptive import holdout_count
from pas.memory import FitMemory, default_chunk, fit_memory
from pas.search import loss_name
from pas.teacher import needed_times, split_requests, states_bytes
from solvers import REGISTRY, schedule_names

# The reference solve behind previews' `teacher` and rmse_to_teacher (architecture: pictures).
REFERENCE_SOLVER, REFERENCE_NFE, REFERENCE_SCHEDULE = "heun", 200, "polynomial"
PREVIEW_COUNT = 64
_DTYPE_BYTES = {"float32": 4, "float64": 8}
# pas.fit keywords that change where, in what chunks or how visibly it runs, never what it fits
# (the runner fills them in); dtype and the dataset are part of every cell anyway.
_PAS_RUNTIME_KEYWORDS = {"schedule", "cache_dir", "progress", "device", "dtype", "dataset",
                         "batch_size", "chunk"}
# The most one PAS teacher solve keeps on disk (--teacher-disk): a teacher group whose states
# would take more is solved in consecutive parts (run order), each deleted once its fits are
# stored, so the cache peaks at one part. 100 GiB puts the paper grid's largest (LSUN Bedroom,
# 238 GiB as one solve) in three parts of 85 GiB, leaving room beside them for a fit's scratch.
DEFAULT_TEACHER_DISK_GIB = 100.0


@dataclass(frozen=True)
class TeacherDisk:
    """How PAS teacher solves use the disk: the most one solve keeps, and whether solves stay in
    the cache after their fits are stored (--keep-teacher)."""

    max_bytes: float = DEFAULT_TEACHER_DISK_GIB * 2**30
    keep: bool = False


DEFAULT_DISK = TeacherDisk()


@dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the grid's (None: keep the grid's)."""

    datasets: list[str] | None = None
    solvers: list[str] | None = None
    nfe: list[int] | None = None
    pas: str | None = None
    num_samples: int | None = None
    batch_size: int | None = None
    dtype: str | None = None
    precision: str | None = None
    model_path: str | None = None
    # --ref-stats: {dataset: path or URL}; the key None holds a bare PATH (the only FID dataset's).
    ref_stats: dict[str | None, str] | None = None
    inception_weights: str | None = None
    guidance: float | None = None
    prompt: str | None = None
    captions: str | None = None
    clip_model: str | None = None
    blocks: int | None = None
    methods: list[str] | None = None


@dataclass(frozen=True)
class Cell:
    """One measurement: everything needed to run it and to recognise it later."""

    index: int
    dataset: str
    solver: str
    nfe: int
    steps: int
    pas: bool
    schedule: str
    options: dict[str, Any]
    pas_settings: dict[str, Any] | None
    num_samples: int
    batch_size: int
    dtype: str
    precision: str
    metric: str
    rmse_samples: int
    config_hash: str
    pas_key: str | None
    # Seed blocks of the metric's standard error (bench.metrics.frechet); 1 = none.
    blocks: int = DEFAULT_BLOCKS
    # Text-to-image datasets: guidance scale and prompt source (bench.models.ms_coco); else None.
    conditioning: dict[str, Any] | None = None
    # The method axis (bench.methods): base and pas follow ``pas``; a peer names itself, its
    # fitters' settings (besides PAS's) and the hash of what its fits depend on.
    method: str = "base"
    method_settings: dict[str, Any] | None = None
    method_key: str | None = None
    # FID datasets: where the reference statistics come from (a path or URL; None: none known).
    reference: str | None = None

    @property
    def seeds(self) -> str:
        return f"0-{self.num_samples - 1}"


def canonical_hash(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def file_identity(path: str) -> str:
    """A file's identity for config hashes: a URL as is, a local file by its content hash, a
    folder (e.g. a diffusers model) by the names and contents of its files (not where they live,
    so the same files give the same hash on every machine)."""
    if urlsplit(path).scheme in ("http", "https"):
        return path
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(root).as_posix()}\0{_content_hash(file)}\0".encode())
        return f"sha256-tree:{digest.hexdigest()}"
    if not root.is_file():
        raise UserError(f"no such file: {path}")
    return f"sha256:{_content_hash(root)}"


def _content_hash(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _solver_spec(name: str):
    if name not in REGISTRY:
        raise UserError(f"unknown solver {name!r}; choose from: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _dataset_spec(name: str) -> DatasetSpec:
    try:
        return get_dataset(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def grid_solver(grid: Grid, entry: str) -> str:
    """The registry solver behind a grid's solver entry: the entry's own name, or the ``solver``
    key of its [solver_options.<entry>] table (a second setting of the same solver)."""
    return grid.solver_options.get(entry, {}).get("solver", entry)


def resolve_solver(solver: str, spec: DatasetSpec, grid: Grid) -> tuple[str, dict[str, Any]]:
    """The schedule name and complete option dict a solver entry runs with on a dataset."""
    described = _solver_spec(grid_solver(grid, solver))
    chosen = dict(grid.solver_options.get(solver, {}))
    chosen.pop("solver", None)
    schedule = chosen.pop("schedule", described.default_schedule)
    if schedule not in schedule_names():
        raise UserError(f"[solver_options.{solver}] schedule {schedule!r} is unknown; choose from: "
                        f"{', '.join(schedule_names())}")
    if "thresholding" in described.options and "thresholding" not in chosen:
        chosen["thresholding"] = spec.thresholding
    try:
        return schedule, described.resolve(chosen)
    except ValueError as exc:
        raise UserError(f"[solver_options.{solver}] {exc}") from None


def pas_defaults() -> dict[str, Any]:
    """The settings pas.fit uses when not told otherwise (its keyword defaults)."""
    params = inspect.signature(pas.fit).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
            and p.name not in _PAS_RUNTIME_KEYWORDS}


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def resolve_pas(grid: Grid, dataset: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Grid [pas] settings, then [datasets.<name>.pas], over pas.fit's defaults (type-checked)."""
    local = grid.dataset_overrides.get(dataset, {}).get("pas", {})
    chosen = {**grid.pas_settings, **local}
    for key, value in chosen.items():
        where = f"[datasets.{dataset}.pas]" if key in local else "[pas]"
        if key not in defaults:
            raise UserError(f"{where} PAS setting {key!r} is unknown; valid: "
                            f"{', '.join(sorted(defaults))}")
        if not _same_kind(value, defaults[key]):
            raise UserError(f"{where} PAS setting {key} must be a {type(defaults[key]).__name__}, "
                            f"got {value!r}")
    if "loss" in chosen:
        try:
            chosen["loss"] = loss_name(chosen["loss"])
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return {**defaults, **chosen}


def _steps(solver: str, nfe: int, options: dict[str, Any]) -> int:
    try:
        return _solver_spec(solver).steps_for_nfe(nfe, **options)
    except ValueError as exc:
        raise UserError(f"solver {solver} cannot run with nfe {nfe}: {exc}") from None


def _metric_identity(spec: DatasetSpec, reference: str | None,
                     overrides: Overrides) -> dict[str, Any]:
    if spec.metric == "fd":
        return {"name": "fd", "reference": "exact"}
    identity = {
        "name": spec.metric,
        "reference": reference and file_identity(reference),
        "features": (file_identity(overrides.inception_weights) if overrides.inception_weights
                     else "pytorch-fid"),
    }
    # Only a resize other than pytorch-fid's own is named: other FID hashes stay as they were.
    if spec.fid_resize != "bilinear":
        identity["resize"] = spec.fid_resize
    if spec.guidance is not None:
        from bench.metrics.clip_score import (
            CLIP_MODEL_ID,  # lazy: only text-to-image datasets need it
        )

        identity["clip"] = (file_identity(overrides.clip_model)
                            if overrides.clip_model and Path(overrides.clip_model).is_dir()
                            else overrides.clip_model or CLIP_MODEL_ID)
    return identity


def _check_checkpoint_overrides(specs: list[DatasetSpec], overrides: Overrides) -> None:
    checkpoints = [spec.name for spec in specs if spec.model_url]
    if overrides.model_path and len(checkpoints) != 1:
        raise UserError(f"--model-path needs exactly one checkpoint dataset in the plan, got "
                        f"{', '.join(checkpoints) or 'none'}")
    text = [spec.name for spec in specs if spec.guidance is not None]
    for option, value in (("--guidance", overrides.guidance), ("--prompt", overrides.prompt),
                          ("--captions", overrides.captions),
                          ("--clip-model", overrides.clip_model)):
        if value is not None and not text:
            raise UserError(f"{option} applies to text-to-image datasets (ms_coco) only")
    if overrides.prompt is not None and overrides.captions is not None:
        raise UserError("--prompt and --captions exclude each other: one prompt for all seeds, or "
                        "a caption per seed")


def _check_ref_stats(specs: list[DatasetSpec], overrides: Overrides) -> None:
    """--ref-stats names FID datasets of the plan; a bare PATH needs exactly one of them."""
    fid = [spec.name for spec in specs if spec.metric == "fid"]
    for name in overrides.ref_stats or {}:
        if name is None and len(fid) != 1:
            raise UserError(f"--ref-stats PATH needs exactly one FID dataset in the plan, got "
                            f"{', '.join(fid) or 'none'}; name it: --ref-stats DATASET=PATH")
        if name is not None and name not in fid:
            raise UserError(f"--ref-stats {name}=...: {name} is not an FID dataset of this plan "
                            f"(FID datasets: {', '.join(fid) or 'none'})")


def _reference(grid: Grid, spec: DatasetSpec, overrides: Overrides) -> str | None:
    """An FID dataset's reference statistics: --ref-stats, then the grid's [datasets.NAME]
    ref_stats, then the dataset's published file (None: an fd dataset, or none is known)."""
    if spec.metric != "fid":
        return None
    given = overrides.ref_stats or {}
    return (given.get(spec.name) or given.get(None)
            or grid.dataset_overrides.get(spec.name, {}).get("ref_stats") or spec.ref_stats_url)


def _first_given(*candidates: tuple[str, int | None]) -> tuple[str, int]:
    """The first (where, value) whose value is set: command line, then grid file, then default."""
    return next((where, value) for where, value in candidates if value)


def _dataset_sizes(grid: Grid, spec: DatasetSpec, overrides: Overrides) -> tuple[int, int]:
    local = grid.dataset_overrides.get(spec.name, {})
    source, num = _first_given(("--num-samples", overrides.num_samples),
                               (f"[datasets.{spec.name}] num_samples", local.get("num_samples")),
                               ("[grid] num_samples", grid.num_samples),
                               ("its default num_samples", spec.default_num_samples))
    # Every rank's moment sums are added before rank 0 computes the metric (bench.distributed),
    # so only the cell's total counts, never the seeds of one rank or shard.
    if num < MIN_SAMPLES:
        raise UserError(f"{spec.name}: the {spec.metric} metric needs at least {MIN_SAMPLES} "
                        f"samples per cell for its covariance, got {source} {num}")
    batch = overrides.batch_size or local.get("batch_size") or grid.batch_size or spec.default_batch_size
    return num, batch


def _check_grid_tables(grid: Grid, specs: list[DatasetSpec], defaults: dict[str, Any]) -> None:
    """Check the grid file's per-dataset and per-solver tables in full, also those the command
    line leaves out of this run, so a typo fails now rather than in a later run."""
    for name in grid.dataset_overrides:
        if name not in dataset_names():
            raise UserError(f"grid file {grid.source}: [datasets.{name}] names no dataset; choose "
                            f"from: {', '.join(dataset_names())}")
    for name in dict.fromkeys([*(spec.name for spec in specs), *grid.dataset_overrides]):
        resolve_pas(grid, name, defaults)
    for solver in grid.solver_options:
        for spec in specs:
            resolve_solver(solver, spec, grid)


def _conditioning(grid: Grid, spec: DatasetSpec, overrides: Overrides, num_samples: int,
                  with_pas: bool) -> dict[str, Any] | None:
    """A text-to-image dataset's guidance and prompt source, checked against the sample count."""
    if spec.guidance is None:
        return None
    from bench.models import ms_coco  # lazy: only text-to-image datasets need it

    local = grid.dataset_overrides.get(spec.name, {})
    guidance = overrides.guidance if overrides.guidance is not None else local.get("guidance")
    captions = overrides.captions or (None if overrides.prompt else local.get("captions"))
    conditioning = ms_coco.text_conditioning(guidance, overrides.prompt, captions)
    ms_coco.check_captions(conditioning, num_samples, with_pas)
    return conditioning


def build_plan(grid: Grid, overrides: Overrides = Overrides()) -> list[Cell]:
    """Every cell of the grid in a fixed order (dataset, solver, NFE, PAS off then on).

    Validates everything a run could trip over later (names, NFE per solver, options, PAS
    settings, local files) and raises ``UserError`` at the first problem.
    """
    # dict.fromkeys: drop repeated names, keep their order.
    datasets = list(dict.fromkeys(overrides.datasets or grid.datasets))
    solvers = list(dict.fromkeys(overrides.solvers or grid.solvers))
    mode = overrides.pas or grid.pas
    pas_flags = {"off": [False], "on": [True], "both": [False, True]}[mode]
    dtype = overrides.dtype or grid.dtype
    precision = overrides.precision or grid.precision
    specs = [_dataset_spec(name) for name in datasets]
    _check_checkpoint_overrides(specs, overrides)
    _check_ref_stats(specs, overrides)
    for name in [*grid.solver_options, *solvers]:
        _solver_spec(grid_solver(grid, name))
    for name in solvers if True in pas_flags else []:
        _check_pas_solver(grid_solver(grid, name), "pas")
    peers = _peers(grid, overrides)
    uses_pas = True in pas_flags or any(methods.METHODS[name].uses_pas for name in peers)
    defaults = pas_defaults()
    _check_grid_tables(grid, specs, defaults)
    cells: list[Cell] = []
    for spec in specs:
        num_samples, batch_size = _dataset_sizes(grid, spec, overrides)
        model = (file_identity(overrides.model_path) if spec.model_url and overrides.model_path
                 else spec.model_url or f"analytic:{spec.name}")
        reference = _reference(grid, spec, overrides)
        metric = _metric_identity(spec, reference, overrides)
        pas_settings = resolve_pas(grid, spec.name, defaults) if uses_pas else None
        conditioning = _conditioning(grid, spec, overrides, num_samples, uses_pas)
        local_nfe = grid.dataset_overrides.get(spec.name, {}).get("nfe")
        blocks = (overrides.blocks or grid.dataset_overrides.get(spec.name, {}).get("blocks")
                  or grid.blocks)
        nfes = list(dict.fromkeys(overrides.nfe or local_nfe or grid.nfe))
        for entry in solvers:
            schedule, options = resolve_solver(entry, spec, grid)
            solver = grid_solver(grid, entry)
            for nfe in dict.fromkeys(nfes):
                steps = _steps(solver, nfe, options)
                axis = [("pas" if use_pas else "base") for use_pas in pas_flags]
                axis += [name for name in peers
                         if methods.selected(grid.methods.get(name, {}), spec.name, entry, nfe)]
                for method in axis:
                    use_pas = methods.METHODS[method].uses_pas
                    _check_pas_solver(solver, method)
                    settings = methods.method_settings(grid.methods, method)
                    methods.check_cell(settings, solver, nfe, steps, options,
                                       f"{spec.name} {solver} nfe={nfe} {method}")
                    cells.append(_cell(len(cells), spec, solver, nfe, steps, use_pas, schedule,
                                       options, pas_settings if use_pas else None, num_samples,
                                       batch_size, dtype, precision, grid.rmse_samples, model, metric,
                                       conditioning, blocks, reference, method, settings))
    return cells


def _peers(grid: Grid, overrides: Overrides) -> list[str]:
    """The peer methods (bench.methods) to run: --methods, else the grid's [methods.*] tables."""
    chosen = methods.peer_names(overrides.methods if overrides.methods is not None
                                else [n for n in grid.methods if n in methods.METHODS])
    for name in grid.methods:
        if name not in methods.METHODS and name not in methods.FITTER_DEFAULTS:
            raise UserError(f"grid file {grid.source}: [methods.{name}] names no method; choose "
                            f"from: {', '.join(methods.PEERS)}")
    for name in methods.FITTER_DEFAULTS:
        methods.fitter_settings(grid.methods, name)
    return chosen


def _check_pas_solver(solver: str, method: str) -> None:
    if methods.METHODS[method].uses_pas and _solver_spec(solver).stages != 1:
        raise UserError(f"PAS cannot correct {solver}: it spends several NFE per step; "
                        "use --pas off or a one-evaluation-per-step solver")


def _cell(index: int, spec: DatasetSpec, solver: str, nfe: int, steps: int, use_pas: bool,
          schedule: str, options: dict[str, Any], pas_settings: dict[str, Any] | None,
          num_samples: int, batch_size: int, dtype: str, precision: str, rmse_samples: int,
          model: str, metric: dict[str, Any], conditioning: dict[str, Any] | None,
          blocks: int, reference: str | None, method: str = "base",
          method_settings: dict[str, Any] | None = None) -> Cell:
    rmse_samples = min(rmse_samples, num_samples)
    fit_identity = {"model": model, "dataset": spec.name, "solver": solver, "nfe": nfe,
                    "schedule": schedule, "options": options, "dtype": dtype,
                    "precision": precision, "pas": pas_settings}
    if conditioning is not None:  # only text-to-image cells carry it: other hashes stay as they were
        fit_identity["conditioning"] = _conditioning_identity(conditioning)
    # What a peer's own fits (a GITS schedule) depend on: shared by GITS and GITS + PAS cells.
    method_key = None
    if method not in ("base", "pas"):
        method_key = canonical_hash({**{k: v for k, v in fit_identity.items() if k != "pas"},
                                     "fits": method_settings})
        fit_identity |= {"method": method, "method_settings": method_settings}
    identity = {**fit_identity, "num_samples": num_samples, "seeds": f"0-{num_samples - 1}",
                "metric": metric, "rmse_samples": rmse_samples}
    # Blocks change the error bars, not the value: cells with the default K keep the hashes they
    # had before seed blocks existed, so their older rows (no value_se) still match.
    if blocks != DEFAULT_BLOCKS:
        identity["blocks"] = blocks
    return Cell(
        index=index, dataset=spec.name, solver=solver, nfe=nfe, steps=steps, pas=use_pas,
        schedule=schedule, options=options, pas_settings=pas_settings, num_samples=num_samples,
        batch_size=batch_size, dtype=dtype, precision=precision, metric=metric["name"],
        rmse_samples=rmse_samples, config_hash=canonical_hash(identity),
        pas_key=canonical_hash(fit_identity) if use_pas else None, conditioning=conditioning,
        blocks=blocks, reference=reference, method=method, method_settings=method_settings,
        method_key=method_key,
    )


def _conditioning_identity(conditioning: dict[str, Any]) -> dict[str, Any]:
    captions = conditioning["captions"]
    return {**conditioning, "captions": captions and file_identity(captions)}


def check_references(cells: list[Cell]) -> None:
    """``UserError`` before anything runs when an FID dataset has no reference statistics (no
    published file to download and none given)."""
    missing = sorted({cell.dataset for cell in cells if cell.metric == "fid" and not cell.reference})
    if missing:
        raise UserError(f"{', '.join(missing)}: no published FID reference statistics to download; "
                        f"run with --ref-stats {missing[0]}=STATS.npz (python -m "
                        "bench.metrics.fid_ref makes one from an image folder)")


def reference_lines(cells: list[Cell], cache_dir: Path) -> list[str]:
    """One dry-run line per FID dataset: where its reference statistics come from (a URL and
    whether it is cached, a local file, or missing)."""
    from bench.downloads import cached_path, is_url

    lines = []
    for name, source in {c.dataset: c.reference for c in cells if c.metric == "fid"}.items():
        if source is None:
            where = f"missing (give --ref-stats {name}=PATH)"
        elif is_url(source):
            state = "cached" if cached_path(source, cache_dir).is_file() else "to download"
            where = f"{source} ({state})"
        else:
            where = f"file {source}"
        resize = get_dataset(name).fid_resize
        lines.append(f"FID reference for {name}: {where}; {resize} resize to 299x299")
    return lines


def select_shard(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    """Cells j with j mod N == i for ``shard = (i, N)``."""
    index, count = shard
    return [cell for cell in cells if cell.index % count == index]


def teacher_group(cell: Cell) -> tuple:
    """Cells whose PAS fits can share one teacher solve have the same group: same model, dtype,
    precision, teacher and teacher seeds."""
    settings = cell.pas_settings
    return (cell.dataset, cell.dtype, cell.precision, settings["teacher"],
            settings["trajectories"], settings["validate"], settings["holdout"])


def teacher_solves(denoiser: Any, cells: list[Cell], max_bytes: float,
                   schedules: dict[str, torch.Tensor] | None = None,
                   ) -> list[tuple[list[Cell], list[pas.TeacherRequest]]]:
    """The teacher solves for the PAS fits of ``cells`` (one teacher group, in run order): one
    shared solve, or consecutive parts whose states keep at most ``max_bytes`` on disk each.
    Each solve comes with its fits (a cell per fit) and their requests; ``schedules`` as for
    ``teacher_requests``."""
    fits = list({cell.pas_key: cell for cell in cells if cell.pas}.values())
    requests = teacher_requests(denoiser, fits, schedules)
    settings = fits[0].pas_settings
    seeds = pas.teacher_seeds(settings["trajectories"], settings["validate"], settings["holdout"])
    per_time = states_bytes(1, len(seeds), denoiser.shape, getattr(torch, fits[0].dtype))
    parts = split_requests(requests, max(1, int(max_bytes // per_time)))
    return [([fits[i] for i in part], [requests[i] for i in part]) for part in parts]


def teacher_requests(denoiser: Any, cells: list[Cell],
                     schedules: dict[str, torch.Tensor] | None = None) -> list[pas.TeacherRequest]:
    """What the teacher must provide for the PAS fits of ``cells`` (one request per fit).

    ``schedules`` maps a fit's pas_key to the explicit times it fits on (GITS + PAS); without
    one a fit's named schedule stands in (the dry run's estimate for GITS + PAS).
    """
    fits = {cell.pas_key: cell for cell in cells if cell.pas}
    schedules = schedules or {}
    try:
        return [pas.student_request(denoiser, c.solver, c.nfe,
                                    schedule=schedules.get(c.pas_key, c.schedule),
                                    teacher_nfe=c.pas_settings["teacher_nfe"], **c.options)
                for c in fits.values()]
    except ValueError as exc:
        raise UserError(f"PAS teacher: {exc}") from None


def _grid_denoiser(spec: DatasetSpec) -> Any:
    """What the teacher's grid depends on: the analytic denoiser itself (cheap), else a stand-in
    with the checkpoint's sigma range (nothing is downloaded for a dry run)."""
    if spec.exact_stats is not None:
        return spec.build()
    return SimpleNamespace(name=spec.model_url, sigma_min=spec.sigma_min,
                           sigma_max=spec.sigma_max, label_dim=spec.label_dim, shape=spec.shape)


def teacher_cost(cells: list[Cell], cache_dir: Path,
                 max_bytes: float = TeacherDisk.max_bytes) -> list[dict[str, Any]]:
    """Per teacher solve of the PAS cells still to fit (one per teacher group, or its parts, see
    ``teacher_solves``): the grid and its denoiser calls (0 when a stored solve already serves
    it) and the bytes it keeps. Groups whose grid needs the model itself (a ``discrete`` schedule
    of a checkpoint) are left out."""
    waiting = [c for c in cells if c.pas
               and not (cache_dir / "artifacts" / f"{c.pas_key}.json").exists()]
    groups: dict[tuple, list[Cell]] = {}
    for cell in waiting:
        groups.setdefault(teacher_group(cell), []).append(cell)
    costs = []
    for key, members in groups.items():
        spec = get_dataset(key[0])
        denoiser = _grid_denoiser(spec)
        try:
            solves = teacher_solves(denoiser, members, max_bytes)
        except UserError:  # a schedule that needs the model itself (discrete: alphas_cumprod)
            continue
        settings = members[0].pas_settings
        seeds = pas.teacher_seeds(settings["trajectories"], settings["validate"], settings["holdout"])
        state = math.prod(spec.shape) * _DTYPE_BYTES[key[1]] * len(seeds)
        # What one shared solve over all of the group's fits would cost, to compare with the parts.
        every = [r for _, part in solves for r in part]
        shared = {"evaluations": 2 * (len(pas.shared_grid(every)) - 1) * len(seeds),
                  "bytes": len(needed_times(every)) * state}
        for part, (fits, requests) in enumerate(solves, start=1):
            stored = spec.exact_stats is not None and pas.stored_teacher(
                denoiser, requests, seeds=seeds, teacher=settings["teacher"],
                dtype=getattr(torch, key[1]), cache_dir=cache_dir) is not None
            steps = 0 if stored else len(pas.shared_grid(requests)) - 1
            costs.append({"dataset": key[0], "fits": len(requests), "grid_steps": steps,
                          "seeds": len(seeds), "evaluations": 2 * steps * len(seeds),
                          # Kept in the cache: every needed time.
                          "stored_bytes": 0 if stored else len(needed_times(requests)) * state,
                          "part": part, "parts": len(solves), "keys": [c.pas_key for c in fits],
                          "shared": shared})
    return costs


def _teacher_peaks(teachers: list[dict[str, Any]], disk: TeacherDisk) -> dict[str, int]:
    """Per dataset, the most its teacher solves keep on disk at once: the largest solve, or all
    of them with --keep-teacher."""
    sizes: dict[str, list[int]] = {}
    for cost in teachers:
        sizes.setdefault(cost["dataset"], []).append(cost["stored_bytes"])
    return {name: sum(part) if disk.keep else max(part) for name, part in sizes.items()}


def teacher_disk_lines(teachers: list[dict[str, Any]], disk: TeacherDisk) -> list[str]:
    """The dry run's teacher cache on disk per dataset, with what its parts cost in evaluations
    against one shared solve."""
    held = "kept (--keep-teacher)" if disk.keep else "deleted once its fits are stored"
    lines = []
    for name, peak in _teacher_peaks(teachers, disk).items():
        solves = [cost for cost in teachers if cost["dataset"] == name]
        shared = solves[0]["shared"]
        split = (f"; the {len(solves)} solves cost {sum(c['evaluations'] for c in solves):,} "
                 f"evaluations, one shared solve {shared['evaluations']:,} for "
                 f"{shared['bytes'] / 2**30:,.1f} GiB" if len(solves) > 1 else "")
        lines.append(f"PAS teacher cache for {name}: {peak / 2**30:,.1f} GiB on disk at most "
                     f"({len(solves)} solve(s) of at most {disk.max_bytes / 2**30:,.0f} GiB, "
                     f"each {held}){split}")
    return lines


def teacher_disk_total(teachers: list[dict[str, Any]], disk: TeacherDisk) -> list[str]:
    """The dry run's closing line: the plan's peak teacher cache on disk (none without PAS)."""
    peaks = _teacher_peaks(teachers, disk).values()
    # Datasets run one after another, so without --keep-teacher their solves never coexist.
    total = sum(peaks) if disk.keep else max(peaks, default=0)
    return [f"PAS teacher cache on disk for the plan: {total / 2**30:,.1f} GiB at peak"] if peaks else []


def _cell_evaluations(cells: list[Cell], cache_dir: Path,
                      teachers: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Denoiser evaluations (per sample, summed) each cell will make, by purpose; work that cells
    share (a PAS fit, a teacher solve, the reference solve) counts in the first cell that needs it.
    ``teachers`` is ``teacher_cost`` of a plan that contains the cells.

    PAS counts assume nothing is cached except artifacts and teacher solves already on disk.
    """
    first_fit = {cost["keys"][0]: cost["evaluations"] for cost in teachers}
    fits, references, per_cell = set(), set(), []
    for cell in cells:
        preview = max(min(PREVIEW_COUNT, cell.num_samples), cell.rmse_samples)
        counts = {"sampling": cell.num_samples * cell.nfe, "previews": preview * cell.nfe,
                  "pas_teacher": 0, "pas_search": 0, "reference": 0}
        shown = (cell.dataset, cell.dtype, preview)
        if (get_dataset(cell.dataset).shape == (2,) or cell.rmse_samples) and shown not in references:
            references.add(shown)
            counts["reference"] = preview * REFERENCE_NFE
        artifact = cache_dir / "artifacts" / f"{cell.pas_key}.json"
        if cell.pas and cell.pas_key not in fits and not artifact.exists():
            fits.add(cell.pas_key)
            settings = cell.pas_settings
            seeds = pas.teacher_seeds(settings["trajectories"], settings["validate"],
                                      settings["holdout"])
            counts["pas_search"] = len(seeds) * cell.nfe
            counts["pas_teacher"] = first_fit.get(cell.pas_key, 0)
        per_cell.append(counts)
    return per_cell


def _evaluation_counts(cells: list[Cell], cache_dir: Path,
                       teachers: list[dict[str, Any]]) -> dict[str, int]:
    """``_cell_evaluations`` summed over the cells, by purpose, and the GITS searches they need."""
    counts = {"sampling": 0, "previews": 0, "pas_teacher": 0, "pas_search": 0, "reference": 0}
    for cell_counts in _cell_evaluations(cells, cache_dir, teachers):
        for purpose, value in cell_counts.items():
            counts[purpose] += value
    denoisers: dict[str, Any] = {}

    def denoiser_for(name: str) -> Any:
        if name not in denoisers:
            denoisers[name] = _grid_denoiser(get_dataset(name))
        return denoisers[name]

    return counts | methods.peer_evaluations(cells, cache_dir, denoiser_for)


def cell_costs(cells: list[Cell], cache_dir: Path, device: torch.device,
               disk: TeacherDisk = DEFAULT_DISK) -> list[float]:
    """Each cell's planned cost, for the progress log's time left: estimated seconds on analytic
    datasets (costs timed now, bench.estimate); on checkpoint datasets, whose network is not timed
    before it loads, denoiser evaluations x values per sample (the log turns them into seconds at
    the rate their finished cells show)."""
    evaluations = _cell_evaluations(cells, cache_dir, teacher_cost(cells, cache_dir, disk.max_bytes))
    timed: dict[tuple, estimate.Costs] = {}
    costs = []
    for cell, counts in zip(cells, evaluations):
        spec = get_dataset(cell.dataset)
        if spec.model_url:
            costs.append(float(sum(counts.values()) * math.prod(spec.shape)))
            continue
        key = (cell.dataset, cell.dtype, cell.batch_size)
        # The reference's square root is timed once per dataset: only its first cell pays it.
        setup = key not in timed
        if setup:
            timed[key] = estimate.calibrate(spec, cell.dtype, cell.batch_size, device)
        work = estimate.Work(spec, cell.dtype, cell.batch_size, sum(counts.values()),
                             cell.num_samples, estimate.BLOCKED_DISTANCES if cell.blocks > 1 else 1)
        costs.append(estimate.seconds(timed[key], work) - (0 if setup else timed[key].metric_setup_s))
    return costs


def _downloads(cells: list[Cell], overrides: Overrides, cache_dir: Path) -> list[tuple[str, Path, bool]]:
    from bench.models import edm  # lazy: only checkpoint datasets need it

    found: dict[str, tuple[str, Path, bool]] = {}
    for name, cell in {cell.dataset: cell for cell in cells}.items():
        spec = get_dataset(name)
        if spec.model_url:
            listing = (partial(spec.downloads, conditioning=cell.conditioning,
                               clip_model=overrides.clip_model)
                       if spec.downloads else edm.required_downloads)
            for url, path, cached in listing(spec, model_path=overrides.model_path,
                                             ref_stats=cell.reference, cache_dir=cache_dir):
                found[url] = (url, path, cached)
    return list(found.values())


def _work(cells: list[Cell], cache_dir: Path,
          teachers: list[dict[str, Any]]) -> list[estimate.Work]:
    """Per dataset: the evaluations, scored samples and cells ``cells`` ask for."""
    works = []
    for name in dict.fromkeys(cell.dataset for cell in cells):
        group = [cell for cell in cells if cell.dataset == name]
        works.append(estimate.Work(
            get_dataset(name), group[0].dtype, group[0].batch_size,
            evaluations=sum(_evaluation_counts(group, cache_dir, teachers).values()),
            scored_samples=sum(cell.num_samples for cell in group),
            distances=sum(estimate.BLOCKED_DISTANCES if cell.blocks > 1 else 1
                          for cell in group)))
    return works


def fit_memory_lines(cells: list[Cell], cache_dir: Path, device: torch.device) -> list[str]:
    """Per dataset with PAS fits to run: the peak memory of its largest fit on ``device`` and
    the largest scratch file a fit keeps on disk meanwhile, from pas.memory's model (the fit
    streams its trajectories in chunks; the default chunk is used)."""
    fits: dict[str, list[tuple[FitMemory, int]]] = {}
    for cell in cells:
        if not cell.pas or (cache_dir / "artifacts" / f"{cell.pas_key}.json").exists():
            continue
        settings, shape = cell.pas_settings, get_dataset(cell.dataset).shape
        held = (holdout_count(settings["trajectories"], settings["holdout"])
                if settings["validate"] else 0)
        chunk = default_chunk(shape, cell.steps, settings["k"], getattr(torch, cell.dtype), device)
        memory = fit_memory(shape, settings["trajectories"], held, cell.steps, settings["k"],
                            _DTYPE_BYTES[cell.dtype], chunk, device.type,
                            cell.options.get("order", 0))
        fits.setdefault(cell.dataset, []).append((memory, min(chunk, settings["trajectories"])))
    lines = []
    for name, found in fits.items():
        memory, chunk = max(found, key=lambda fit: fit[0].device)
        scratch = max(fit.scratch for fit, _ in found)
        where = (f"{size_text(memory.host)} on the host" if device.type == "cpu"
                 else f"{size_text(memory.device)} on the {device.type} device and "
                 f"{size_text(memory.host)} on the host")
        lines.append(f"PAS fit for {name}: peak {where} ({chunk:,} trajectories per chunk; "
                     f"the network's own memory comes on top), up to {size_text(scratch)} of "
                     "scratch in the cache")
    return lines


def size_text(count: int) -> str:
    """Bytes as the dry run prints them: GiB from 1 GiB on, else MiB."""
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.0f} MiB"


def describe_plan(cells: list[Cell], todo: list[Cell], overrides: Overrides, cache_dir: Path,
                  device: torch.device, disk: TeacherDisk = DEFAULT_DISK) -> str:
    """The --dry-run report: every cell, its status and cost, totals, a time estimate, downloads."""
    from tabulate import tabulate

    waiting = {cell.config_hash for cell in todo}
    table = [[cell.index, cell.dataset, cell.solver, cell.nfe, "on" if cell.pas else "off",
              cell.method, cell.schedule, cell.num_samples, cell.batch_size,
              cell.num_samples * cell.nfe,
              "run" if cell.config_hash in waiting else "done", cell.config_hash[:12]]
             for cell in cells]
    headers = ["#", "dataset", "solver", "nfe", "pas", "method", "schedule", "samples", "batch",
               "evaluations", "status", "config_hash"]
    # One teacher cost per plan: it builds the analytic denoisers and the shared grids.
    teachers = teacher_cost(todo, cache_dir, disk.max_bytes)
    counts = _evaluation_counts(todo, cache_dir, teachers)
    skipped = len(cells) - len(todo)
    parts = ", ".join(f"{name} {value:,}" for name, value in counts.items())
    lines = [tabulate(table, headers=headers, intfmt=","),
             f"cells: {len(cells)} selected, {len(todo)} to run, {skipped} already in the store",
             f"denoiser evaluations to run: {sum(counts.values()):,} ({parts})",
             *estimate.describe(_work(todo, cache_dir, teachers), device)]
    lines.extend(
        f"PAS teacher for {cost['dataset']}"
        + (f" (part {cost['part']} of {cost['parts']})" if cost["parts"] > 1 else "")
        + f": one solve for {cost['fits']} fit(s), "
        + (f"{cost['grid_steps']} Heun steps = {2 * cost['grid_steps']} NFE per trajectory x "
           f"{cost['seeds']:,} seeds = {cost['evaluations']:,} evaluations, "
           f"{cost['stored_bytes'] / 2**30:,.1f} GiB of states in the cache"
           if cost["grid_steps"] else "already in the cache")
        for cost in teachers)
    lines.extend(teacher_disk_lines(teachers, disk))
    lines.extend(reference_lines(todo, cache_dir))
    lines.extend(fit_memory_lines(todo, cache_dir, device))
    downloads = _downloads(todo, overrides, cache_dir)
    lines.append("downloads:" + ("" if downloads else " none"))
    lines.extend(f"  {url} -> {path} ({'cached' if cached else 'to download'})"
                 for url, path, cached in downloads)
    lines.extend(teacher_disk_total(teachers, disk))
    return "\n".join(lines)
