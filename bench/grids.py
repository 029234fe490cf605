"""Benchmark grid files: TOML, loaded with tomllib and checked before anything runs.

Schema (every table and key below is optional unless marked required; unknown keys are errors):

    [grid]
    name         = "toy"                  # default: the file name without .toml
    description  = "..."
    datasets     = ["gmm2d", "digits"]    # required: dataset registry names (bench.models.registry)
    solvers      = ["ddim", "dpmpp"]      # required: solver registry names (solvers.REGISTRY)
    nfe          = [5, 10]                # required: exact denoiser evaluations per sample
    pas          = "both"                 # "off" | "on" | "both" (default "both")
    num_samples  = 5000                   # default: each dataset's default_num_samples
    batch_size   = 1000                   # default: each dataset's default_batch_size
    dtype        = "float32"              # "float32" | "float64" (default "float32")
    precision    = "fp32"                 # "fp32" | "fp16" | "bf16": checkpoint networks only
    rmse_samples = 64                     # first seeds compared with a Heun-200 reference solve
                                          # (row field rmse_to_teacher); 0 = off (default);
                                          # more than a cell's num_samples means all of them
    blocks       = 10                     # seed blocks (seed n in block n mod K) behind the
                                          # metric's jackknife SE (value_se); 1 = no SE (default 10)

    [solver_options.<solver>]             # per-solver settings, e.g. for dpmpp:
    schedule = "polynomial"               #   time schedule (default: the solver's own)
    order = 2                             #   any option of solvers.sample (order, rho, afs,
                                          #   denoise_to_zero, lower_order_final, variant,
                                          #   thresholding); dpmpp/unipc thresholding defaults
                                          #   to the dataset's `thresholding`
    [solver_options.ipndm3]               # a second setting of one solver: list "ipndm3" in
    solver = "ipndm"                      #   `solvers`; its cells run ipndm with these options
    order = 3                             #   (rows and reports show solver "ipndm", order 3)

    [pas]                                 # keyword settings of pas.fit, e.g.
    trajectories = 1000                   #   teacher trajectories fitted on
    teacher_nfe = 100
    k = 4
    loss = "L1"
    lr = 0.01
    epochs = 100

    [methods.gits]                        # PAS's peers (bench.methods): a table turns one on
    solvers = ["ddim", "ipndm"]           #   optional: only these solvers, datasets, NFEs
    nfe = [5, 6, 8, 10]
    coeff = 1.15                          #   GITS settings: points, metric, coeff, warmup
    [methods.gits_pas]                    # PAS on the GITS schedule ([methods.gits] settings)
    solvers = ["ddim", "ipndm"]
    [methods.amed]                        # AMED plug-in (ddim, ipndm, dpmpp)
    afs = "auto"                          #   AMED settings: afs (auto/on/off), trajectories,
                                          #   teacher_nfe, batch_size, epochs, lr, seed,
                                          #   scale_dir, scale_time, hidden_dim

    [datasets.<name>]                     # per-dataset overrides
    num_samples = 2000
    batch_size = 250
    nfe = [5, 10]                         #   this dataset's NFE list instead of [grid] nfe
    blocks = 1                            #   this dataset's seed blocks instead of [grid] blocks
    guidance = 7.5                        #   text-to-image only: classifier-free guidance scale
    captions = "captions.csv"             #   text-to-image only: prompts CSV (path or URL)
    ref_stats = "stats.npz"               #   FID datasets: reference statistics (path or URL)
                                          #   instead of the dataset's published file
    [datasets.<name>.pas]                 # overrides of [pas] for this dataset
    trajectories = 500

Command-line options (--datasets, --solvers, --nfe, --pas, --methods, --num-samples, --batch-size,
--dtype, --precision, --ref-stats) override the file, per-dataset values included; see bench.plan
for how a grid becomes cells. Every table is checked
before anything runs, also those of datasets, solvers or PAS settings a command line leaves out,
and every cell needs at least 2 samples (FD and FID estimate a covariance).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.metrics.frechet import DEFAULT_BLOCKS

GRID_DIR = Path(__file__).resolve().parent / "grids"
PAS_MODES = ("off", "on", "both")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "fp16", "bf16")
_GRID_KEYS = {"name", "description", "datasets", "solvers", "nfe", "pas", "num_samples",
              "batch_size", "dtype", "precision", "rmse_samples", "blocks"}
_DATASET_KEYS = {"num_samples", "batch_size", "nfe", "guidance", "captions", "pas", "blocks",
                 "ref_stats"}


@dataclass(frozen=True)
class Grid:
    """A parsed, structurally valid grid file (names are checked against registries later)."""

    name: str
    source: str
    datasets: tuple[str, ...]
    solvers: tuple[str, ...]
    nfe: tuple[int, ...]
    pas: str = "both"
    num_samples: int | None = None
    batch_size: int | None = None
    dtype: str = "float32"
    precision: str = "fp32"
    rmse_samples: int = 0
    blocks: int = DEFAULT_BLOCKS
    description: str = ""
    solver_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    pas_settings: dict[str, Any] = field(default_factory=dict)
    dataset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)


def grid_names() -> list[str]:
    """Names of the grids shipped in bench/grids/."""
    return sorted(path.stem for path in GRID_DIR.glob("*.toml"))


def resolve_grid_path(name_or_path: str) -> Path:
    """A shipped grid's file for a bare name, else the given path; ``UserError`` if neither."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"grid file {name_or_path} does not exist; shipped grids go by name "
                            f"(--grid {path.stem if path.stem in grid_names() else 'smoke'}): "
                            f"{', '.join(grid_names())}")
        return path
    shipped = GRID_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise UserError(f"unknown grid {name_or_path!r}; choose from: {', '.join(grid_names())} "
                        "or give a path to a .toml file")
    return shipped


class _Checker:
    """Type checks that report which file and table a bad value is in."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> UserError:
        return UserError(f"grid file {self.source}: {message}")

    def table(self, value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be a table")
        unknown = sorted(set(value) - allowed) if allowed is not None else []
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}")
        return value

    def positive_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(f"{where} must be a positive integer, got {value!r}")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{where} must be a number, got {value!r}")
        return float(value)

    def names(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where} must be a non-empty list of names")
        return tuple(value)

    def ints(self, value: Any, where: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(f"{where} must be a non-empty list of positive integers")
        return tuple(self.positive_int(v, where) for v in value)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value


def parse_grid(data: dict[str, Any], source: str, default_name: str) -> Grid:
    """Check the structure of a TOML document and build a :class:`Grid`."""
    check = _Checker(source)
    check.table(data, "the file", {"grid", "solver_options", "pas", "datasets", "methods"})
    if "grid" not in data:
        raise check.fail("missing the [grid] table")
    grid = check.table(data["grid"], "[grid]", _GRID_KEYS)
    for key in ("datasets", "solvers", "nfe"):
        if key not in grid:
            raise check.fail(f"[grid] needs `{key}`")
    optional_int = {key: check.positive_int(grid[key], f"[grid] {key}")
                    for key in ("num_samples", "batch_size", "blocks") if key in grid}
    rmse_samples = grid.get("rmse_samples", 0)
    if rmse_samples != 0:
        check.positive_int(rmse_samples, "[grid] rmse_samples")
    solver_options = check.table(data.get("solver_options", {}), "[solver_options]")
    for solver, options in solver_options.items():
        check.table(options, f"[solver_options.{solver}]")
        if not isinstance(options.get("solver", ""), str):
            raise check.fail(f"[solver_options.{solver}] solver must be a solver name")
    overrides = check.table(data.get("datasets", {}), "[datasets]")
    for name, table in overrides.items():
        check.table(table, f"[datasets.{name}]", _DATASET_KEYS)
        for key in ("num_samples", "batch_size", "blocks"):
            if key in table:
                check.positive_int(table[key], f"[datasets.{name}] {key}")
        if "nfe" in table:
            table["nfe"] = list(check.ints(table["nfe"], f"[datasets.{name}] nfe"))
        if "guidance" in table:
            check.number(table["guidance"], f"[datasets.{name}] guidance")
        for key in ("captions", "ref_stats"):
            if key in table and not isinstance(table[key], str):
                raise check.fail(f"[datasets.{name}] {key} must be a path or URL string")
        check.table(table.get("pas", {}), f"[datasets.{name}.pas]")
    return Grid(
        name=str(grid.get("name", default_name)),
        source=source,
        datasets=check.names(grid["datasets"], "[grid] datasets"),
        solvers=check.names(grid["solvers"], "[grid] solvers"),
        nfe=check.ints(grid["nfe"], "[grid] nfe"),
        pas=check.choice(grid.get("pas", "both"), "[grid] pas", PAS_MODES),
        num_samples=optional_int.get("num_samples"),
        batch_size=optional_int.get("batch_size"),
        dtype=check.choice(grid.get("dtype", "float32"), "[grid] dtype", DTYPES),
        precision=check.choice(grid.get("precision", "fp32"), "[grid] precision", PRECISIONS),
        rmse_samples=rmse_samples,
        blocks=optional_int.get("blocks", DEFAULT_BLOCKS),
        description=str(grid.get("description", "")),
        solver_options={name: dict(options) for name, options in solver_options.items()},
        pas_settings=dict(check.table(data.get("pas", {}), "[pas]")),
        dataset_overrides={name: dict(table) for name, table in overrides.items()},
        methods=_method_tables(check, data.get("methods", {})),
    )


def _method_tables(check: _Checker, tables: Any) -> dict[str, dict[str, Any]]:
    """[methods.<name>] tables with their selection lists checked (bench.plan checks settings)."""
    check.table(tables, "[methods]")
    for name, table in tables.items():
        check.table(table, f"[methods.{name}]")
        for key in ("datasets", "solvers"):
            if key in table:
                check.names(table[key], f"[methods.{name}] {key}")
        if "nfe" in table:
            check.ints(table["nfe"], f"[methods.{name}] nfe")
    return {name: dict(table) for name, table in tables.items()}


def load_grid(name_or_path: str) -> Grid:
    """Load a shipped grid by name (``smoke``, ``toy``, ``paper``) or any TOML file by path."""
    path = resolve_grid_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read grid file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"grid file {path} is not valid TOML: {exc}") from None
    return parse_grid(data, str(path), path.stem)
