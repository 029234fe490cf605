"""Fit PAS coordinates (`python -m pas fit ...`) or summarise an artifact (`python -m pas show FILE`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import torch
from tabulate import tabulate

from pas.adaptive import fit
from pas.artifact import PASArtifact
from pas.search import LOSSES, OPTIMIZERS

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DATASETS_GROUP = "pas.datasets"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of usage plus message."""

    def error(self, message: str) -> None:
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    f = commands.add_parser("fit", help="fit PAS coordinates for one solver and NFE")
    f.add_argument("--dataset", required=True, help="a dataset name from the installed registry (pasbench: bench.models)")
    f.add_argument("--solver", required=True, help="a solver that spends one NFE per step (ddim, ipndm, ipndm_v, deis, dpmpp, unipc)")
    f.add_argument("--nfe", type=int, required=True, help="denoiser evaluations per sample")
    f.add_argument("--out", required=True, help="artifact path (JSON)")
    f.add_argument("--schedule", help="schedule name (default: the solver's)")
    f.add_argument("--order", type=int, help="max order of multistep solvers")
    f.add_argument(
        "--thresholding",
        action=argparse.BooleanOptionalAction,
        help="dynamic thresholding of dpmpp/unipc (default: the dataset's)",
    )
    f.add_argument("--trajectories", type=int, default=5000, help="teacher trajectories fitted on (default 5000)")
    f.add_argument("--teacher-nfe", type=int, default=100, help="Heun teacher evaluations (default 100)")
    f.add_argument("--k", type=int, default=4, help="basis size (coordinates per step)")
    f.add_argument("--loss", default="L1", help=", ".join(LOSSES))
    f.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="exact",
        help="exact: the loss's minimiser (default); adam: the reference's loop, for paper parity",
    )
    f.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    f.add_argument("--epochs", type=int, default=1000, help="most Adam epochs per step (default 1000)")
    f.add_argument("--early-stop", type=int, default=10, help="Adam: stop after this many flat epochs (default 10)")
    f.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="keep every step the search accepts (the reference's behaviour) instead of gating "
        "them on held-out seeds",
    )
    f.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        help="held-out seeds for the gate, as a fraction of --trajectories (default 0.1, at least 100)",
    )
    f.add_argument("--tau-first", type=float, default=1e-4, help="loss drop needed to accept the first step")
    f.add_argument("--tau", type=float, default=1e-4, help="loss drop needed to accept later steps")
    f.add_argument(
        "--no-xT", dest="use_xT", action="store_false", help="leave x_T out of the PCA buffer"
    )
    f.add_argument("--batch-size", type=int, help="samples per denoiser call (default: dataset's)")
    f.add_argument(
        "--chunk",
        type=int,
        help="trajectories followed at a time (memory grows with it, not with --trajectories; "
        "default: a quarter of a CUDA device's memory, 1 GiB on the CPU)",
    )
    f.add_argument("--cache-dir", help="default: $PASBENCH_CACHE or ~/.cache/pasbench")
    f.add_argument("--device", default="cpu", help="torch device (default cpu)")
    f.add_argument("--dtype", choices=list(DTYPES), default="float32", help="working dtype (default float32)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    s = commands.add_parser("show", help="summarise an artifact")
    s.add_argument("path")
    return parser


def _solver_options(args: argparse.Namespace, dataset_thresholding: bool) -> dict[str, Any]:
    import solvers

    takes = solvers.get_solver(args.solver).options
    options: dict[str, Any] = {}
    if args.order is not None:
        options["order"] = args.order
    if "thresholding" in takes:
        options["thresholding"] = (
            dataset_thresholding if args.thresholding is None else args.thresholding
        )
    elif args.thresholding is not None:
        raise ValueError(f"{args.solver} has no thresholding option")
    return options


def find_dataset(name: str) -> Any:
    """The dataset ``name`` from the registry installed under the ``pas.datasets`` entry point.

    pas knows no dataset itself: a package above it (pasbench's ``bench.models``) declares a
    function name -> dataset in its metadata, so ``--dataset`` works without pas importing it.
    The dataset has ``name``, ``build(device=, dtype=)``, ``default_batch_size`` and
    ``thresholding``; the function raises ValueError for an unknown name or a dataset that
    cannot be built.
    """
    providers = entry_points(group=DATASETS_GROUP)
    if not providers:
        raise ValueError(
            f"no dataset registry is installed (entry point group {DATASETS_GROUP!r}); "
            "install pasbench with pip install -e ."
        )
    return next(iter(providers)).load()(name)


def _fit(args: argparse.Namespace) -> int:
    spec = find_dataset(args.dataset)
    dtype = DTYPES[args.dtype]
    denoiser = spec.build(device=args.device, dtype=dtype)
    art = fit(
        denoiser,
        args.solver,
        args.nfe,
        schedule=args.schedule,
        trajectories=args.trajectories,
        teacher_nfe=args.teacher_nfe,
        k=args.k,
        use_xT=args.use_xT,
        loss=args.loss,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        early_stop=args.early_stop,
        tau_first=args.tau_first,
        tau=args.tau,
        validate=args.validate,
        holdout=args.holdout,
        batch_size=spec.default_batch_size if args.batch_size is None else args.batch_size,
        chunk=args.chunk,
        cache_dir=args.cache_dir,
        device=args.device,
        dtype=dtype,
        dataset=spec.name,
        progress=not args.quiet,
        **_solver_options(args, spec.thresholding),
    )
    art.save(args.out)
    print(summary(art))
    print(f"saved {args.out}")
    return 0


def summary(art: PASArtifact) -> str:
    """A readable description of an artifact: settings, then one row per searched step."""
    teacher = art.teacher
    seeds = teacher.get("seeds")
    seed_text = f"seeds {seeds[0]}..{seeds[1] - 1}" if seeds else "custom seeds"
    options = ", ".join(f"{k}={v}" for k, v in sorted(art.options.items()))
    cached = " (cached)" if teacher.get("cached") else ""
    head = [
        f"PAS artifact: {art.solver} at NFE {art.nfe} on {art.dataset} (model {art.model})",
        f"options: {options}; dtype {art.dtype}",
        f"schedule: {art.schedule or 'explicit times'}, sigma {art.sigma_min:g}..{art.sigma_max:g}",
        (
            f"basis: k={art.k}, use_xT={art.use_xT}; loss {art.loss}, optimizer {art.optimizer}"
            + (f" (lr {art.lr:g}, epochs <= {art.epochs}, early stop {art.early_stop})"
               if art.optimizer == "adam" else "")
            + f", tau first {art.tau_first:g}, tau {art.tau:g}"
        ),
        (
            f"teacher: {teacher.get('solver')} ~{teacher.get('nfe')} NFE, "
            f"{teacher.get('trajectories')} trajectories ({seed_text}), "
            f"{art.teacher_seconds:.1f} s{cached}"
        ),
        _memory_line(art),
        (
            f"fit: {art.fit_seconds:.2f} s ("
            + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in art.fit_parts.items())
            + f"); n_params {art.n_params} on {len(art.corrected)} corrected steps "
            f"{sorted(art.corrected)}"
        ),
        _gate_line(art),
    ]
    rows = [
        [
            s.index,
            f"{art.times[s.index]:.4g} -> {art.times[s.index + 1]:.4g}",
            s.n_coords,
            s.epochs,
            f"{s.loss_before:.5g}",
            f"{s.loss_after:.5g}",
            ("yes" if s.index in art.corrected else "yes, gate dropped it") if s.accepted else "no",
            " ".join(f"{c:.5g}" for c in art.corrected.get(s.index, [])),
        ]
        for s in art.search
    ]
    table = tabulate(
        rows,
        headers=[
            "step",
            "t",
            "coords",
            "epochs",
            "loss before",
            "loss after",
            "accepted",
            "coordinates",
        ],
    )
    text = "\n".join(head) + "\n" + table
    if art.validation:
        rows = [
            [" ".join(map(str, c["steps"])) or "none (base solver)", f"{c['loss']:.6g}"]
            for c in art.validation["candidates"]
        ]
        text += "\n" + tabulate(rows, headers=["corrected steps", "held-out loss"])
    return text


def _memory_line(art: PASArtifact) -> str:
    memory = art.memory
    if not memory:
        return "memory: not recorded"
    parts = [f"chunks of {art.chunk} trajectories"]
    if memory["device_peak"] is not None:
        parts.append(f"peak {memory['device_peak'] / 2**20:,.0f} MiB on {memory['device']}")
    if memory["host_rss_anon_peak"] is not None:
        parts.append(f"host RssAnon peak {memory['host_rss_anon_peak'] / 2**20:,.0f} MiB")
    return "memory: " + ", ".join(parts)


def _gate_line(art: PASArtifact) -> str:
    if not art.validation:
        return "gate: off (every accepted step kept)"
    v = art.validation
    seeds = v["seeds"]
    return (
        f"held out (seeds {seeds[0]}..{seeds[1] - 1}): base {v['base']:.6g}, "
        f"all accepted {v['searched']:.6g}, kept {v['kept'] or 'none'} {v['kept_loss']:.6g} "
        f"(gain {art.holdout_gain:.2%})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fit":
            return _fit(args)
        print(summary(PASArtifact.load(args.path)))
        return 0
    except (ValueError, OSError) as err:
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)


if __name__ == "__main__":
    sys.exit(main())
