"""PAS's peers in the same grid: the method axis (base, PAS, GITS, GITS + PAS, AMED).

A method is a list of *fitters* run in order before a cell samples; each takes the cell's
:class:`Sampling` (its schedule and correction hook) and returns the one to use next:

- ``gits``: searches the solver's schedule (the ``gits`` package) on a Heun teacher over its fine
  grid; the schedule replaces the cell's named one.
- ``pas``: fits a PAS correction on the schedule it is given (pas.fit).
- ``amed``: trains the AMED plug-in's predictor (the ``amed`` package) on a Heun teacher at the
  plug-in's times; the cell then samples with it (``Sampling.sample``) instead of the plain solver.

So GITS + PAS is PAS fitted on the GITS schedule. A fitter's settings live in the grid's
``[methods.<fitter>]`` table (PAS: ``[pas]``); a ``[methods.<method>]`` table turns a method on for
the grid and may narrow it with ``datasets``, ``solvers`` and ``nfe``. Adding a method is one
entry in METHODS; a new kind of fit also needs its entries in FITTERS, FITTER_DEFAULTS and
FITTER_CHECKS, its cell check in ``check_cell``, its dry-run count in ``peer_evaluations`` and,
if it does not sample through ``solvers.sample``, a ``Sampling.sample``.

Cells of ``base`` and ``pas`` hash exactly as before the axis existed (their identity holds no
method), so older stores still match them; the other methods add ``method`` and their fitters'
settings to the identity.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import amed
import gits
import pas
import solvers
from bench.errors import UserError
from bench.models import get_dataset
from bench.models.bottleneck import BottleneckFeatures

if TYPE_CHECKING:
    from bench.plan import Cell

# Keys of a [methods.<method>] table that choose its cells rather than set a fitter.
SELECTION_KEYS = ("datasets", "solvers", "nfe")
# The teacher behind the GITS search and AMED's training (the only one pas.teacher offers).
GITS_TEACHER = "heun"
# amed.fit's keywords that a [methods.amed] table may set (their defaults are amed.fit's).
AMED_FIT_KEYS = ("trajectories", "teacher_nfe", "batch_size", "epochs", "lr", "seed", "scale_dir",
                 "scale_time", "hidden_dim")
# When an AMED cell runs with AFS: "auto" when its NFE's parity needs it (the official tables' odd
# NFEs), "on" or "off" always (a cell whose NFE then does not fit is a plan error).
AMED_AFS = ("auto", "on", "off")
# Seeds whose latents are drawn at a time to read their class labels.
LABEL_CHUNK = 1024


@dataclass(frozen=True)
class Method:
    """A row of the method axis: its fitters, in order, and whether its cells carry PAS settings."""

    name: str
    label: str
    description: str
    fits: tuple[str, ...]

    @property
    def uses_pas(self) -> bool:
        return "pas" in self.fits


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("base", "", "the solver on its own schedule", ()),
    Method("pas", "PAS", "PAS correction on the solver's schedule (pas-spec)", ("pas",)),
    Method("gits", "GITS", "GITS: the schedule searched by dynamic programming (ICML 2024)",
           ("gits",)),
    Method("gits_pas", "GITS + PAS", "PAS fitted on the GITS schedule", ("gits", "pas")),
    Method("amed", "AMED", "AMED plug-in: a learned intermediate time in every step (CVPR 2024)",
           ("amed",)),
]}
# Methods a grid turns on with a [methods.<name>] table (base and PAS follow `pas`).
PEERS = tuple(name for name in METHODS if name not in ("base", "pas"))
FITTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "gits": gits.DEFAULTS,
    "amed": {"afs": "auto", **{name: p.default for name, p in
                               inspect.signature(amed.fit).parameters.items()
                               if name in AMED_FIT_KEYS}},
}


@dataclass(frozen=True)
class Sampling:
    """How a cell samples: its schedule (a name or explicit times), the correction hook, the PAS
    artifact behind it (for the row's PAS fields) and what the other fitters report, by fitter
    (the row's ``method_fit``). ``sample``, when set, replaces solvers.sample:
    ``sample(denoiser, latents, labels, trajectory)`` returns what solvers.sample would (AMED)."""

    schedule: str | torch.Tensor
    correction: Any = None
    artifact: Any = None
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample: Callable[[Any, torch.Tensor, torch.Tensor | None, bool], Any] | None = None


def peer_names(names: list[str] | None) -> list[str]:
    """Checked peer method names (``["none"]``: none)."""
    names = list(dict.fromkeys(names or []))
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from: {', '.join(PEERS)} (or none)")
    return names


def fitter_settings(tables: dict[str, dict[str, Any]], fitter: str) -> dict[str, Any]:
    """A fitter's settings: its [methods.<fitter>] values over its defaults, type-checked."""
    defaults = FITTER_DEFAULTS[fitter]
    chosen = {k: v for k, v in tables.get(fitter, {}).items() if k not in SELECTION_KEYS}
    for key, value in chosen.items():
        if key not in defaults:
            raise UserError(f"[methods.{fitter}] setting {key!r} is unknown; valid: "
                            f"{', '.join([*SELECTION_KEYS, *sorted(defaults)])}")
        default = defaults[key]
        wrong = (isinstance(value, bool) or not isinstance(value, type(default))
                 and not (isinstance(default, float) and isinstance(value, int)))
        if wrong:
            raise UserError(f"[methods.{fitter}] {key} must be a {type(default).__name__}, "
                            f"got {value!r}")
    settings = {**defaults, **chosen}
    FITTER_CHECKS[fitter](settings)
    return settings


def _check_gits(settings: dict[str, Any]) -> None:
    if settings["metric"] not in gits.METRICS:
        raise UserError(f"[methods.gits] metric must be one of {', '.join(gits.METRICS)}, "
                        f"got {settings['metric']!r}")
    for key, low in (("points", 2), ("warmup", 1)):
        if settings[key] < low:
            raise UserError(f"[methods.gits] {key} must be at least {low}, got {settings[key]}")
    if not (math.isfinite(settings["coeff"]) and settings["coeff"] > 0):
        raise UserError(f"[methods.gits] coeff must be positive, got {settings['coeff']}")


def _check_amed(settings: dict[str, Any]) -> None:
    if settings["afs"] not in AMED_AFS:
        raise UserError(f"[methods.amed] afs must be one of {', '.join(AMED_AFS)}, "
                        f"got {settings['afs']!r}")
    for key in ("trajectories", "teacher_nfe", "batch_size", "epochs", "hidden_dim"):
        low = 0 if key == "epochs" else 1
        if settings[key] < low:
            raise UserError(f"[methods.amed] {key} must be at least {low}, got {settings[key]}")
    if not (math.isfinite(settings["lr"]) and settings["lr"] > 0):
        raise UserError(f"[methods.amed] lr must be positive, got {settings['lr']}")
    for key in ("scale_dir", "scale_time"):
        if not (math.isfinite(settings[key]) and settings[key] >= 0):
            raise UserError(f"[methods.amed] {key} must be >= 0, got {settings[key]}")


FITTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {"gits": _check_gits,
                                                               "amed": _check_amed}


def selected(table: dict[str, Any], dataset: str, solver: str, nfe: int) -> bool:
    """Whether a [methods.<method>] table's ``datasets``/``solvers``/``nfe`` lists keep a cell."""
    return all(table.get(key) is None or value in table[key]
               for key, value in (("datasets", dataset), ("solvers", solver), ("nfe", nfe)))


def check_cell(settings: dict[str, Any] | None, solver: str, nfe: int, steps: int,
               options: dict[str, Any], where: str) -> None:
    """A peer's plan-time checks of a cell. GITS: a path of ``steps`` steps must fit the fine
    grid (with AFS, its inserted free step is a grid point too). AMED: the solver must be one it
    plugs into and the NFE must be 2N (2N - 1 with AFS, + 1 with denoise_to_zero)."""
    if settings and "gits" in settings:
        points = settings["gits"]["points"]
        if steps > points - 1:
            raise UserError(f"{where}: GITS cannot pick {steps} steps from {points} fine-grid "
                            "points; raise [methods.gits] points")
    if settings and "amed" in settings:
        if solvers.get_solver(solver).name not in amed.BASES:
            raise UserError(f"{where}: AMED plugs into {', '.join(amed.BASES)} (euler = ddim), "
                            f"not {solver}")
        try:
            amed_steps(settings["amed"], nfe, options)
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None


def amed_options(settings: dict[str, Any], nfe: int, options: dict[str, Any]) -> dict[str, Any]:
    """The solver options an AMED cell runs with: the cell's, with AFS as ``settings["afs"]``
    says (the base solver's own ``afs`` option does not apply)."""
    parity_needs_afs = (nfe - int(options["denoise_to_zero"])) % 2 == 1
    afs = {"on": True, "off": False}.get(settings["afs"], parity_needs_afs)
    return {**options, "afs": afs}


def amed_steps(settings: dict[str, Any], nfe: int, options: dict[str, Any]) -> int:
    """N, the AMED steps of a cell (ValueError when its NFE does not fit)."""
    plugin = amed_options(settings, nfe, options)
    return amed.steps_for_nfe(nfe, plugin["afs"], plugin["denoise_to_zero"])


def method_settings(tables: dict[str, dict[str, Any]], method: str) -> dict[str, Any] | None:
    """The settings of ``method``'s fitters besides PAS (part of its cells' identity)."""
    fitters = [f for f in METHODS[method].fits if f != "pas"]
    return {f: fitter_settings(tables, f) for f in fitters} or None


# ----- fitting, run by bench.run's Runner --------------------------------------------------------
def _gits_path(runner: Any, cell: Cell) -> Path:
    return runner.cache_dir / "gits" / f"{cell.method_key}.json"


def gits_teacher_seeds(settings: dict[str, Any]) -> range:
    """The warm-up seeds: the first of PAS's teacher seeds (fixed; the official code's are not)."""
    return pas.teacher_seeds(settings["warmup"], validate=False)


def gits_request(denoiser: Any, cell: Cell) -> tuple[torch.Tensor, pas.TeacherRequest]:
    """The fine grid of a GITS cell (the cell's schedule with ``points`` times, as the official
    code builds it from its schedule flags) and the teacher request of Heun on exactly it."""
    fine = gits.fine_grid(denoiser, cell.method_settings["gits"]["points"], cell.schedule,
                          cell.options["rho"])
    return fine, pas.TeacherRequest(fine, fine)


def search_gits(runner: Any, cell: Cell) -> gits.GITSArtifact:
    """Search the cell's GITS schedule: a stored teacher solve that holds the fine grid (a shared
    PAS solve or an earlier search's), else one Heun solve on it; then gits.fit."""
    settings = cell.method_settings["gits"]
    denoiser = runner.fit_denoiser(cell)
    dtype = runner.dtype(cell)
    fine, request = gits_request(denoiser, cell)
    seeds = gits_teacher_seeds(settings)
    try:
        teacher = pas.teacher_states(
            denoiser, [request], seeds=seeds, teacher=GITS_TEACHER, dtype=dtype,
            device=runner.device, batch_size=cell.batch_size, cache_dir=runner.cache_dir,
            progress=runner.progress)
        latents, labels = solvers.latents_for_seeds(seeds, denoiser.shape, dtype=dtype,
                                                    device=runner.device,
                                                    label_dim=denoiser.label_dim)
        found = gits.fit(
            denoiser, cell.solver, cell.nfe, teacher.states(fine).to(runner.device), fine,
            latents=latents, class_labels=labels, metric=settings["metric"],
            coeff=settings["coeff"], settings=settings, batch_size=cell.batch_size,
            dataset=cell.dataset, teacher=_teacher_info(teacher, seeds), **cell.options)
    except ValueError as exc:
        label = f"{cell.dataset} {cell.solver} nfe={cell.nfe}"
        raise UserError(f"GITS search for {label}: {exc}") from None
    return found


def gits_artifact(runner: Any, cell: Cell, sync: bool = True) -> gits.GITSArtifact:
    """The cell's GITS schedule: from the cache, else searched by rank 0. With ``sync`` every rank
    calls this once per schedule and waits for rank 0 (the result is kept); without it (rank 0
    alone, before a shared teacher solve) the file is read and nothing is kept, so that every
    rank still meets the barrier of its own synced call later."""
    key = ("gits", cell.method_key)
    if key in runner.fitted:
        return runner.fitted[key]
    path = _gits_path(runner, cell)
    if runner.world.is_main and not path.exists():
        found = search_gits(runner, cell)
        found.save(path)
        runner.log.gits_finished(f"{cell.dataset} {cell.solver} nfe={cell.nfe}", found)
    if sync:
        runner.barrier()
    try:
        found = gits.GITSArtifact.load(path)
    except ValueError as exc:
        raise UserError(f"{exc}; delete {path} to search it again") from None
    if sync:
        runner.fitted[key] = found
    return found


def _fit_gits(runner: Any, cell: Cell, sampling: Sampling) -> Sampling:
    found = gits_artifact(runner, cell)
    teacher = found.teacher
    solved = not teacher.get("cached")
    report = {"times": found.times, "indices": found.indices, "search_s": found.search_seconds,
              "teacher_s": teacher.get("generation_seconds") if solved else 0.0,
              # Denoiser calls of this search: the teacher's (unless cached) and its own.
              "evaluations": found.warmup * (found.evaluations + (teacher["nfe"] if solved else 0))}
    return replace(sampling, schedule=found.schedule, fits={**sampling.fits, "gits": report})


def _fit_pas(runner: Any, cell: Cell, sampling: Sampling) -> Sampling:
    artifact = runner.artifact(cell, sampling.schedule)
    return replace(sampling, correction=artifact.correction(), artifact=artifact)


def amed_request(denoiser: Any, cell: Cell) -> tuple[dict[str, Any], torch.Tensor,
                                                     pas.TeacherRequest]:
    """(solver options, plug-in times, teacher request) of an AMED cell: Heun at about
    ``teacher_nfe`` calls, its grid built as a PAS fit's on the same times."""
    settings = cell.method_settings["amed"]
    options = amed_options(settings, cell.nfe, cell.options)
    steps = amed_steps(settings, cell.nfe, cell.options)
    times = amed.plugin_times(denoiser, cell.solver, steps, cell.schedule, options)
    request = pas.TeacherRequest.for_student(denoiser, times, cell.schedule, options["rho"],
                                             settings["teacher_nfe"])
    return options, times, request


def _amed_group(cell: Cell) -> tuple:
    """AMED cells whose teachers can be one solve: same model, dtype and teacher seeds."""
    return (cell.dataset, cell.dtype, cell.precision, cell.method_settings["amed"]["trajectories"])


def amed_teacher_seeds(settings: dict[str, Any]) -> range:
    """The training trajectories' seeds: the first of PAS's teacher seeds."""
    return pas.teacher_seeds(settings["trajectories"], validate=False)


def features_for(denoiser: Any, dataset: str) -> contextlib.AbstractContextManager:
    """AMED's features as a context: a checkpoint network's bottleneck hook (removed on exit, so
    that other cells' calls do not feed it), else None (the denoiser's stand-in, amed.features)."""
    if get_dataset(dataset).model_url:
        return BottleneckFeatures(denoiser)
    return contextlib.nullcontext()


def train_amed(runner: Any, cell: Cell) -> amed.AMEDArtifact:
    """Train the cell's AMED predictor on the teacher's states at the plug-in's times: from a
    stored solve that holds them (a shared PAS solve, an earlier AMED fit's), else from one solve
    shared with this run's other AMED fits of the same teacher seeds."""
    settings = cell.method_settings["amed"]
    denoiser = runner.fit_denoiser(cell)
    dtype = runner.dtype(cell)
    options, times, request = amed_request(denoiser, cell)
    group = [amed_request(denoiser, c)[2] for c in runner.cells
             if c.method_key != cell.method_key and "amed" in METHODS[c.method].fits
             and _amed_group(c) == _amed_group(cell)
             and not (runner.cache_dir / "amed" / f"{c.method_key}.json").exists()]
    seeds = amed_teacher_seeds(settings)
    label = f"{cell.dataset} {cell.solver} nfe={cell.nfe}"
    try:
        teacher = pas.teacher_states(
            denoiser, [request, *group], seeds=seeds, teacher=GITS_TEACHER, dtype=dtype,
            device=runner.device, batch_size=cell.batch_size, cache_dir=runner.cache_dir,
            progress=runner.progress)
        labels = _seed_labels(seeds, denoiser, dtype, runner.device)
        with features_for(runner.denoiser(cell), cell.dataset) as features:
            return amed.fit(
                denoiser, cell.solver, cell.nfe, teacher=teacher.states(times).to(runner.device),
                teacher_info=_teacher_info(teacher, seeds), features=features,
                class_labels=labels, schedule=cell.schedule, dataset=cell.dataset,
                progress=runner.progress, **{k: settings[k] for k in AMED_FIT_KEYS}, **options)
    except ValueError as exc:
        raise UserError(f"AMED fit for {label}: {exc}") from None


def _seed_labels(seeds: range, denoiser: Any, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor | None:
    """The class labels of ``seeds`` (None for an unconditional model), drawn in chunks: the
    latents drawn beside them would be trajectories x sample size and are not needed."""
    if not denoiser.label_dim:
        return None
    chunks = [seeds[i : i + LABEL_CHUNK] for i in range(0, len(seeds), LABEL_CHUNK)]
    return torch.cat([solvers.latents_for_seeds(chunk, denoiser.shape, dtype=dtype,
                                                label_dim=denoiser.label_dim)[1]
                      for chunk in chunks]).to(device)


def _teacher_info(teacher: pas.TeacherStates, seeds: range) -> dict[str, Any]:
    """What an artifact records of the stored teacher solve it used."""
    return {"solver": GITS_TEACHER, "nfe": teacher.nfe, "grid_points": len(teacher.grid),
            "seeds": [seeds.start, seeds.stop], "cached": teacher.cached,
            # The stored solve: <cache>/teacher/<identity hash>/<solve hash> (pas.teacher).
            "identity": teacher.folder.parent.name, "solve": teacher.folder.name,
            "generation_seconds": teacher.generation_seconds, "seconds": teacher.seconds}


def amed_artifact(runner: Any, cell: Cell) -> amed.AMEDArtifact:
    """The cell's AMED predictor: from the cache, else trained by rank 0; every rank waits for
    rank 0 and samples with the loaded file."""
    key = ("amed", cell.method_key)
    if key not in runner.fitted:
        path = runner.cache_dir / "amed" / f"{cell.method_key}.json"
        if runner.world.is_main and not path.exists():
            found = train_amed(runner, cell)
            found.save(path)
            runner.log.amed_finished(f"{cell.dataset} {cell.solver} nfe={cell.nfe}", found)
        runner.barrier()
        try:
            runner.fitted[key] = amed.AMEDArtifact.load(path)
        except ValueError as exc:
            raise UserError(f"{exc}; delete {path} to fit it again") from None
    return runner.fitted[key]


def _amed_sample(artifact: amed.AMEDArtifact, dataset: str, denoiser: Any,
                 latents: torch.Tensor, labels: torch.Tensor | None, trajectory: bool) -> Any:
    with features_for(denoiser, dataset) as features:
        return artifact.sample(denoiser, latents, features=features, class_labels=labels,
                               return_trajectory=trajectory)


def _fit_amed(runner: Any, cell: Cell, sampling: Sampling) -> Sampling:
    found = amed_artifact(runner, cell)
    teacher = found.teacher
    solved = not teacher.get("cached")
    settings = cell.method_settings["amed"]
    trained = amed.fit_evaluations(cell.nfe, found.training["trajectories"], settings["epochs"])
    report = {"times": found.times, "steps": found.num_steps, "afs": found.options["afs"],
              "features": found.features, "train_losses": found.train_losses,
              "fit_s": found.fit_seconds,
              "teacher_s": teacher.get("generation_seconds") if solved else 0.0,
              # Denoiser calls of this fit: the teacher's (unless stored before) and training's.
              "evaluations": trained + (teacher["nfe"] * found.training["trajectories"]
                                        if solved else 0)}
    return replace(sampling, fits={**sampling.fits, "amed": report},
                   sample=partial(_amed_sample, found, cell.dataset))


FITTERS: dict[str, Callable[[Any, Cell, Sampling], Sampling]] = {
    "gits": _fit_gits,
    "pas": _fit_pas,
    "amed": _fit_amed,
}


def prepare(runner: Any, cell: Cell) -> Sampling:
    """Run the cell's method's fitters in order (cached work is loaded, not redone)."""
    sampling = Sampling(cell.schedule)
    for fitter in METHODS[cell.method].fits:
        sampling = FITTERS[fitter](runner, cell, sampling)
    return sampling


def searched_schedules(runner: Any, cells: list[Cell]) -> dict[str, torch.Tensor]:
    """pas_key -> GITS schedule of the GITS + PAS cells among ``cells`` (searched now if need be,
    by rank 0 alone), so that their PAS fits can join the shared teacher solve."""
    return {c.pas_key: gits_artifact(runner, c, sync=False).schedule for c in cells
            if c.pas and "gits" in METHODS[c.method].fits}


# ----- the dry run's count ----------------------------------------------------------------------
def gits_evaluations(cells: list[Cell], cache_dir: Path, denoiser_for: Callable) -> dict[str, int]:
    """Denoiser evaluations of the GITS searches ``cells`` still need ({} without GITS cells):
    the Heun teacher on each fine grid not yet in the cache (2 per step per warm-up seed) and
    the teacher's directions (one per fine point but the last, per warm-up seed). With AFS the
    search also samples once per candidate first step; those runs are not counted."""
    if not any("gits" in METHODS[c.method].fits for c in cells):
        return {}
    searches = {c.method_key: c for c in cells if "gits" in METHODS[c.method].fits
                and not (cache_dir / "gits" / f"{c.method_key}.json").exists()}
    teachers: dict[tuple, int] = {}
    search = 0
    for cell in searches.values():
        settings = cell.method_settings["gits"]
        denoiser = denoiser_for(cell.dataset)
        try:
            fine, request = gits_request(denoiser, cell)
        except (ValueError, AttributeError):  # a discrete schedule needs the model itself
            continue
        seeds = gits_teacher_seeds(settings)
        key = (cell.dataset, cell.dtype, cell.precision, settings["warmup"], tuple(fine.tolist()))
        # A checkpoint's stand-in (not callable) cannot tell which solve its real model made.
        stored = callable(denoiser) and pas.stored_teacher(
            denoiser, [request], seeds=seeds, teacher=GITS_TEACHER,
            dtype=getattr(torch, cell.dtype), cache_dir=cache_dir) is not None
        teachers[key] = 0 if stored else 2 * (len(fine) - 1) * len(seeds)
        search += (len(fine) - 1) * len(seeds)
    return {"gits_teacher": sum(teachers.values()), "gits_search": search}


def amed_evaluations(cells: list[Cell], cache_dir: Path, denoiser_for: Callable) -> dict[str, int]:
    """Denoiser evaluations of the AMED fits ``cells`` still need ({} without AMED cells): one
    Heun teacher solve per teacher group on the shared grid of its fits' own grids (unless a
    stored solve serves them), and the training's calls (amed.fit_evaluations; those at t_mid
    also backpropagate, which this count does not weigh)."""
    if not any("amed" in METHODS[c.method].fits for c in cells):
        return {}
    fits = {c.method_key: c for c in cells if "amed" in METHODS[c.method].fits
            and not (cache_dir / "amed" / f"{c.method_key}.json").exists()}
    groups: dict[tuple, list[pas.TeacherRequest]] = {}
    training = 0
    for cell in fits.values():
        settings = cell.method_settings["amed"]
        training += amed.fit_evaluations(cell.nfe, settings["trajectories"], settings["epochs"])
        try:
            groups.setdefault(_amed_group(cell), []).append(
                amed_request(denoiser_for(cell.dataset), cell)[2])
        except (ValueError, AttributeError):  # a discrete schedule needs the model itself
            continue
    teacher = 0
    for (dataset, dtype, _, trajectories), requests in groups.items():
        denoiser = denoiser_for(dataset)
        seeds = amed_teacher_seeds({"trajectories": trajectories})
        # A checkpoint's stand-in (not callable) cannot tell which solve its real model made.
        stored = callable(denoiser) and pas.stored_teacher(
            denoiser, requests, seeds=seeds, teacher=GITS_TEACHER,
            dtype=getattr(torch, dtype), cache_dir=cache_dir) is not None
        teacher += 0 if stored else 2 * (len(pas.shared_grid(requests)) - 1) * len(seeds)
    return {"amed_teacher": teacher, "amed_training": training}


def peer_evaluations(cells: list[Cell], cache_dir: Path, denoiser_for: Callable) -> dict[str, int]:
    """The dry run's count of the peers' fits (GITS searches, AMED training), by purpose."""
    return (gits_evaluations(cells, cache_dir, denoiser_for)
            | amed_evaluations(cells, cache_dir, denoiser_for))
