"""bench.run's command line: help, dry run, and every kind of bad input (exit 2, one line)."""
from __future__ import annotations

import pytest
import torch
from run_helpers import run_cli, write_grid

from bench.cli import parse_args, parse_shard
from bench.errors import UserError
from bench.estimate import Costs, Work, describe, seconds
from bench.grids import load_grid
from bench.models.registry import get_dataset
from bench.plan import Overrides, build_plan
from bench.run import main


@pytest.fixture
def tiny(tmp_path):
    return write_grid(tmp_path)


def _fails_cleanly(capsys, out, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("bench.run: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert not list(out.glob("*.jsonl")) if out.is_dir() else True


BAD_ARGS = [
    (["--datasets", "nope"], "unknown dataset 'nope'"),
    (["--solvers", "ddim,nope"], "unknown solver 'nope'"),
    (["--solvers", "heun", "--nfe", "5", "--pas", "off"], "heun cannot run with nfe 5"),
    (["--solvers", "heun", "--nfe", "6"], "PAS cannot correct heun"),
    (["--nfe", "0"], "NFE must be positive"),
    (["--shard", "2/2"], "--shard 2/2"),
    (["--shard", "one/two"], "--shard must look like i/N"),
    (["--num-samples", "-3"], "positive integer"),
    (["--blocks", "0"], "positive integer"),
    (["--teacher-disk", "0"], "expected a positive number, got '0'"),
    (["--ref-stats", "a.npz"], "--ref-stats PATH needs exactly one FID dataset in the plan, got none"),
    (["--num-samples", "1", "--datasets", "gmm2d"],
     "gmm2d: the fd metric needs at least 2 samples per cell for its covariance, got --num-samples 1"),
    (["--datasets", ","], "argument --datasets: expected a name, got ','"),
    (["--solvers", ""], "argument --solvers: expected a name, got ''"),
    (["--pas", "maybe"], "invalid choice"),
    (["--no-such-option"], "unrecognized arguments"),
]


@pytest.mark.parametrize("extra,needle", BAD_ARGS, ids=[a[0][0] + str(i) for i, a in enumerate(BAD_ARGS)])
def test_bad_arguments_exit_2(tmp_path, tiny, capsys, extra, needle):
    out = tmp_path / "out"
    _fails_cleanly(capsys, out, ["--grid", str(tiny), "--out", str(out), *extra], needle)


BAD_GRIDS = [
    ("[grid\ndatasets = 1", "not valid TOML"),
    ("[grid]\nsolvers = ['ddim']\nnfe = [5]", "[grid] needs `datasets`"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = ['five']", "[grid] nfe must be"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\nnum_samples = 1.5",
     "num_samples must be a positive integer"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\nsamples = 3", "unknown key 'samples'"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\nblocks = 0",
     "[grid] blocks must be a positive integer"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.gmm2d]\nblocks = -1",
     "[datasets.gmm2d] blocks must be a positive integer"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\npas = 'sometimes'", "[grid] pas"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[solver_options.ddim]\norder = 2",
     "ddim does not take option 'order'"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['dpmpp']\nnfe = [5]\n[solver_options.dpmpp]\norder = 9",
     "order must be an integer in 1..3"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[solver_options.ddim]\nschedule = 'x'",
     "schedule 'x' is unknown"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[solver_options.ddmi]\nrho = 5.0",
     "unknown solver 'ddmi'"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[pas]\nsteps = 3",
     "PAS setting 'steps' is unknown"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[pas]\nk = 'four'",
     "PAS setting k must be a int"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[pas]\nloss = 'L7'",
     "unknown PAS loss 'L7'"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.gmm2d]\nbatch_size = 0",
     "[datasets.gmm2d] batch_size"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\nnum_samples = 1",
     "needs at least 2 samples per cell for its covariance, got [grid] num_samples 1"),
    ("[grid]\ndatasets = ['digits']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.digits]\nnum_samples = 1",
     "got [datasets.digits] num_samples 1"),
    # Tables the run does not use are checked too: a typo there fails now, not in a later run.
    ("[grid]\ndatasets = ['digits']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.digts]\nnum_samples = 9",
     "[datasets.digts] names no dataset"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\npas = 'off'\n[pas]\ntrajectoris = 9",
     "[pas] PAS setting 'trajectoris' is unknown"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.digits.pas]\nepoch = 9",
     "[datasets.digits.pas] PAS setting 'epoch' is unknown"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[solver_options.dpmpp]\nordr = 2",
     "dpmpp does not take option 'ordr'"),
    ("[grid]\ndatasets = ['gmm2d']\nsolvers = ['ddim']\nnfe = [5]\n[datasets.gmm2d]\nnfe = [0]",
     "[datasets.gmm2d] nfe"),
]


@pytest.mark.parametrize("text,needle", BAD_GRIDS, ids=[str(i) for i in range(len(BAD_GRIDS))])
def test_bad_grid_files_exit_2(tmp_path, capsys, text, needle):
    grid = write_grid(tmp_path, text, "bad.toml")
    out = tmp_path / "out"
    _fails_cleanly(capsys, out, ["--grid", str(grid), "--out", str(out)], needle)


def test_too_few_samples_for_the_metric_writes_nothing(tmp_path, capsys):
    """The issue's command: one sample cannot give a covariance; caught before anything runs."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    _fails_cleanly(capsys, out, ["--datasets", "digits", "--solvers", "ddim", "--nfe", "5",
                                 "--num-samples", "1", "--pas", "off", "--out", str(out),
                                 "--cache-dir", str(cache)],
                   "digits: the fd metric needs at least 2 samples per cell")
    assert not out.exists() and not cache.exists()
    (cell,) = build_plan(load_grid("toy"), Overrides(datasets=["digits"], solvers=["ddim"], nfe=[5],
                                                      pas="off", num_samples=2, methods=["none"]))
    assert cell.num_samples == 2


def test_unknown_grid_name_and_missing_file(tmp_path, capsys):
    _fails_cleanly(capsys, tmp_path, ["--grid", "nosuchgrid"], "unknown grid 'nosuchgrid'")
    _fails_cleanly(capsys, tmp_path, ["--grid", str(tmp_path / "gone.toml")], "does not exist")
    _fails_cleanly(capsys, tmp_path, ["--grid", "toy.toml"], "shipped grids go by name (--grid toy)")


def test_unwritable_out_exits_2(tmp_path, tiny, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails_cleanly(capsys, tmp_path, ["--grid", str(tiny), "--out", str(blocker / "runs")],
                   "cannot write to")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_exits_2(tmp_path, tiny, capsys):
    out = tmp_path / "out"
    _fails_cleanly(capsys, out, ["--grid", str(tiny), "--out", str(out), "--device", "cuda"],
                   "no CUDA device")
    assert not list(out.glob("*.jsonl"))


def test_real_process_prints_one_line_and_no_traceback(tmp_path, tiny):
    done = run_cli("--grid", str(tiny), "--out", str(tmp_path / "out"), "--datasets", "nope")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bench.run: error: unknown dataset 'nope'; choose from: " + done.stderr.split("from: ")[1].strip()]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.jsonl"))


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--grid", "--datasets", "--solvers", "--nfe", "--pas", "--num-samples",
                   "--batch-size", "--device", "--dtype", "--out", "--cache-dir", "--force",
                   "--shard", "--dry-run", "--quiet", "--save-images", "--precision",
                   "--model-path", "--ref-stats", "--inception-weights", "--blocks",
                   "--keep-teacher", "--teacher-disk"):
        assert option in text


def test_list_options_accept_spaces_and_commas():
    args = parse_args(["--nfe", "4,5", "6", "--datasets", "gmm2d,digits", "--shard", "1/3",
                       "--nfe", "8"])
    assert args.nfe == [4, 5, 6, 8]  # a repeated option adds to the list
    assert args.datasets == ["gmm2d", "digits"]
    assert args.shard == (1, 3)
    assert parse_shard(None) == (0, 1)
    with pytest.raises(UserError):
        parse_shard("0/0")


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, tiny, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["--grid", str(tiny), "--out", str(out), "--cache-dir", str(cache), "--dry-run",
                 "--shard", "0/2"]) == 0
    text = capsys.readouterr().out
    # Shard 0/2 keeps the even cells: PAS off for every (dataset, solver).
    assert "cells: 4 selected, 4 to run, 0 already in the store" in text
    table = text.split("cells:")[0]
    assert table.count(" off ") == 4 and " on " not in table
    # 300 samples x 4 NFE per cell, 64-sample previews, and the Heun-200 reference for gmm2d
    # (64 seeds) and digits (rmse_samples = 16 < 64 preview seeds -> 64 seeds).
    sampling, previews, reference = 4 * 300 * 4, 4 * 64 * 4, 2 * 64 * 200
    assert f"denoiser evaluations to run: {sampling + previews + reference:,}" in text
    # Costs timed now, scaled by each dataset's evaluations, scored samples and cells.
    assert "estimated time: " in text
    evaluations = {"gmm2d": 2 * 300 * 4 + 2 * 64 * 4 + 64 * 200,
                   "digits": 2 * 300 * 4 + 2 * 64 * 4 + 64 * 200}
    for name, count in evaluations.items():
        assert f"  {name}: " in text and f"({count:,} evaluations at " in text
        assert "metric 600 samples at " in text and "+ 4 distances x " in text  # 2 cells with blocks
    assert "downloads: none" in text
    assert not list(out.glob("*.jsonl")) and not cache.exists()


def test_corrupt_cached_artifact_is_a_user_error(tmp_path, tiny, capsys):
    (cell,) = build_plan(load_grid(str(tiny)), Overrides(datasets=["gmm2d"], solvers=["ddim"], pas="on"))
    cache = tmp_path / "cache"
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / f"{cell.pas_key}.json").write_text("{not json")
    out = tmp_path / "out"
    _fails_cleanly(capsys, out, ["--grid", str(tiny), "--out", str(out), "--cache-dir", str(cache),
                                 "--datasets", "gmm2d", "--solvers", "ddim", "--pas", "on"],
                   "delete")


def test_time_estimate_scales_timed_costs_by_the_plan():
    costs = Costs(evaluation_s=2e-6, metric_sample_s=1e-6, metric_cell_s=0.5, metric_setup_s=3.0)
    work = Work(get_dataset("digits"), "float32", 1000, evaluations=1_000_000,
                scored_samples=40_000, distances=4)
    assert seconds(costs, work) == pytest.approx(2.0 + 0.04 + 2.0 + 3.0, rel=1e-12)


def test_checkpoint_datasets_get_no_estimate_and_load_nothing():
    cifar = Work(get_dataset("cifar10"), "float32", 500, evaluations=10, scored_samples=2, distances=1)
    assert describe([cifar], torch.device("cpu")) == [
        "estimated time: no estimate",
        "  cifar10: no estimate (checkpoint network; --dry-run loads none)"]
    assert describe([], torch.device("cpu")) == []
