"""Command-line options of ``python -m bench.run``."""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import NoReturn

from bench.errors import UserError
from bench.grids import DTYPES, PAS_MODES, PRECISIONS
from bench.plan import DEFAULT_TEACHER_DISK_GIB

DESCRIPTION = """\
Run a benchmark grid: every (dataset, solver, NFE, method) cell samples its seeds,
scores them with a streaming metric (FD against exact statistics for analytic data, FID for
image checkpoints) and appends one row to <out>/<run_id>.jsonl. Cells whose configuration
already has a row in <out> are skipped, so rerunning a command completes an interrupted run.
Several processes: torchrun --nproc_per_node=K -m bench.run ... splits the seeds over ranks.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as a UserError (one line, exit 2) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    names = _split(text)
    if not names:
        raise argparse.ArgumentTypeError(f"expected a name, got {text!r}")
    return names


def _flatten(values: list[list[str]] | None) -> list[str] | None:
    return None if values is None else [item for group in values for item in group]


def _nfe_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in _split(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"NFE must be positive integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"NFE must be positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _ref_source(text: str) -> tuple[str | None, str]:
    """``DATASET=PATH`` -> (dataset, path); a bare PATH -> (None, path). A prefix with a slash or a
    dot is part of a path (``./a=b.npz``), not a dataset name."""
    name, equals, path = text.partition("=")
    if equals and name and not any(mark in name for mark in "/\\."):
        if not path:
            raise argparse.ArgumentTypeError(f"expected DATASET=PATH, got {text!r}")
        return name, path
    return None, text


def ref_stats_by_dataset(sources: list[tuple[str | None, str]] | None) -> dict[str | None, str] | None:
    """Repeated ``--ref-stats`` values as {dataset: path}, the bare PATH under None; each dataset
    (and the bare PATH) at most once."""
    if sources is None:
        return None
    found: dict[str | None, str] = {}
    for name, path in sources:
        if name in found:
            shown = f"{name}=PATH" if name else "PATH (without DATASET=)"
            raise UserError(f"--ref-stats {shown} is given twice")
        found[name] = path
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench.run", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--grid", default="toy", metavar="NAME|PATH",
        help="grid to run: a shipped name (smoke, toy, paper) or a TOML file (default: toy)")
    # action="extend": a repeated option adds to the list (--nfe 5 --nfe 10 runs both).
    add("--datasets", nargs="+", type=_names, action="extend", metavar="NAME",
        help="run only these datasets instead of the grid's (space- or comma-separated)")
    add("--solvers", nargs="+", type=_names, action="extend", metavar="NAME",
        help="run only these solvers instead of the grid's")
    add("--nfe", nargs="+", type=_nfe_list, action="extend", metavar="N",
        help="denoiser evaluations per sample to run instead of the grid's")
    add("--pas", choices=PAS_MODES,
        help="off: base solvers only; on: PAS-corrected only; both: each cell with and without "
             "(PAS's peers follow --methods)")
    add("--methods", nargs="+", type=_names, action="extend", metavar="NAME",
        help="PAS's peers to run besides base/PAS: gits, gits_pas, amed (default: the grid's "
             "[methods.*] tables; none: no peers)")
    add("--num-samples", type=_positive, metavar="N",
        help="samples per cell (seeds 0..N-1) for every dataset, overriding the grid")
    add("--batch-size", type=_positive, metavar="B",
        help="samples per solver call; changes speed and memory, never the numbers")
    add("--blocks", type=_positive, metavar="K",
        help="seed blocks (seed n in block n mod K) behind each metric's jackknife standard "
             "error, value_se (default: the grid's, else 10; 1 = no error bars)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where to sample (auto: CUDA when available); under torchrun each rank "
             "uses cuda:LOCAL_RANK")
    add("--dtype", choices=DTYPES, help="working dtype of the samplers, overriding the grid")
    add("--precision", choices=PRECISIONS,
        help="arithmetic of checkpoint networks (analytic datasets ignore it)")
    add("--out", default="results/runs", metavar="DIR",
        help="results store folder: rows go to DIR/<run_id>.jsonl (default: results/runs)")
    add("--cache-dir", metavar="DIR",
        help="cache for PAS teacher trajectories and artifacts and for downloads "
             "(default: $PASBENCH_CACHE or ~/.cache/pasbench)")
    add("--force", action="store_true",
        help="run cells even when the store already has a row with the same config_hash")
    add("--shard", metavar="i/N",
        help="run only cells j with j mod N == i (independent jobs writing into one store)")
    add("--dry-run", action="store_true",
        help="validate and print the plan (cells, denoiser evaluations, downloads) and a time "
             "estimate from costs timed now on this machine; run nothing")
    add("--quiet", action="store_true",
        help="no progress output: neither the bars shown when stderr is a terminal nor the "
             "one-line-per-cell log printed when it is not")
    add("--save-images", metavar="DIR",
        help="also write every sample: PNGs for image-shaped data, .npy batches otherwise")
    add("--model-path", metavar="PATH",
        help="local checkpoint for the (single) checkpoint dataset instead of its URL: a file, "
             "or for ms_coco a diffusers folder, a single .ckpt/.safetensors file or its URL")
    add("--ref-stats", action="append", type=_ref_source, metavar="[DATASET=]PATH",
        help="FID reference statistics (.npz with mu, sigma; a path or URL) for DATASET instead "
             "of its default; repeat it for several datasets. A bare PATH serves the plan's only "
             "FID dataset. The grid file's [datasets.NAME] ref_stats does the same")
    add("--keep-teacher", action="store_true",
        help="keep PAS teacher solves in the cache after the fits that use them are stored "
             "(default: delete each once its fits are stored, to bound the cache on disk; "
             "--shard runs always keep them)")
    add("--teacher-disk", type=_positive_float, default=DEFAULT_TEACHER_DISK_GIB, metavar="GIB",
        help="the most one PAS teacher solve keeps on disk, in GiB: a teacher that would keep "
             f"more is solved in parts, in run order (default {DEFAULT_TEACHER_DISK_GIB:g})")
    add("--inception-weights", metavar="PATH",
        help="local pytorch-fid Inception weights instead of downloading them")
    add("--guidance", type=_finite, metavar="W",
        help="text-to-image (ms_coco): classifier-free guidance scale (default 7.5; 1 = none)")
    add("--prompt", metavar="TEXT",
        help="text-to-image: sample this one prompt for every seed (a quick look)")
    add("--captions", metavar="CSV",
        help="text-to-image: prompts CSV with a 'caption' column, caption n for seed n "
             "(default: MS-COCO val2014's 30k captions, downloaded)")
    add("--clip-model", metavar="PATH|HUB_ID",
        help="text-to-image: CLIP model folder or Hub id for the CLIP score "
             "(default: laion/CLIP-ViT-g-14-laion2B-s12B-b42K)")
    return parser


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; None -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    index, _, count = text.partition("/")
    try:
        index_value, count_value = int(index), int(count)
    except ValueError:
        raise UserError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if count_value <= 0 or not 0 <= index_value < count_value:
        raise UserError(f"--shard {text}: need N >= 1 and 0 <= i < N")
    return index_value, count_value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; list options come back flattened (``--nfe 4,5 6`` -> [4, 5, 6])."""
    args = build_parser().parse_args(argv)
    args.datasets = _flatten(args.datasets)
    args.solvers = _flatten(args.solvers)
    args.nfe = _flatten(args.nfe)
    args.methods = _flatten(args.methods)
    args.ref_stats = ref_stats_by_dataset(args.ref_stats)
    args.shard = parse_shard(args.shard)
    return args
