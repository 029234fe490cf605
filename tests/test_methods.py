"""The method axis (bench.methods): base, PAS, GITS, GITS + PAS and AMED cells in grids, their rows,
the report's rows and gains, compare, and stores written before the axis existed."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from run_helpers import assert_same_numbers, by_hash, local_cifar10_options, read_rows, run_cli

import amed
import gits
import solvers
from bench import methods
from bench.compare import main as compare_main
from bench.errors import UserError
from bench.grids import parse_grid
from bench.models import get_dataset
from bench.plan import Overrides, build_plan
from bench.results import load_rows
from bench.run import main
from report.tables import gain_table, metric_table, published_methods, published_table, with_labels
from tests.store_factory import make_row, write_rows

GRID = """
[grid]
datasets = ["gmm2d"]
solvers = ["ddim", "ipndm"]
nfe = [4, 5]
num_samples = 200
batch_size = 200
blocks = 4
[pas]
trajectories = 100
epochs = 20
[methods.gits]
warmup = 32
points = 21
[methods.gits_pas]
solvers = ["ipndm"]
nfe = [5]
"""


def _grid(text: str = GRID):
    import tomllib

    return parse_grid(tomllib.loads(text), "test.toml", "test")


def _without_methods(text: str) -> str:
    return text.split("[methods.gits]")[0]


def test_peers_join_the_plan_and_base_and_pas_keep_their_hashes():
    cells = build_plan(_grid())
    axis = [(c.solver, c.nfe, c.method) for c in cells]
    assert axis == [("ddim", 4, "base"), ("ddim", 4, "pas"), ("ddim", 4, "gits"),
                    ("ddim", 5, "base"), ("ddim", 5, "pas"), ("ddim", 5, "gits"),
                    ("ipndm", 4, "base"), ("ipndm", 4, "pas"), ("ipndm", 4, "gits"),
                    ("ipndm", 5, "base"), ("ipndm", 5, "pas"), ("ipndm", 5, "gits"),
                    ("ipndm", 5, "gits_pas")]
    plain = build_plan(_grid(_without_methods(GRID)))
    assert {c.config_hash for c in plain} == {c.config_hash for c in cells
                                              if c.method in ("base", "pas")}
    assert {c.pas_key for c in plain if c.pas} == {c.pas_key for c in cells if c.method == "pas"}
    by = {(c.solver, c.nfe, c.method): c for c in cells}
    gits_cell, both = by[("ipndm", 5, "gits")], by[("ipndm", 5, "gits_pas")]
    # One GITS schedule serves both; the PAS fit on it is not the plain PAS fit.
    assert gits_cell.method_key == both.method_key and gits_cell.method_key is not None
    assert both.pas and not gits_cell.pas and both.pas_key != by[("ipndm", 5, "pas")].pas_key
    assert gits_cell.method_settings == {"gits": {**gits.DEFAULTS, "warmup": 32, "points": 21}}
    assert len({c.config_hash for c in cells}) == len(cells)


def test_methods_override_and_bad_method_tables():
    assert {c.method for c in build_plan(_grid(), Overrides(methods=["none"]))} == {"base", "pas"}
    assert {c.method for c in build_plan(_grid(), Overrides(methods=["gits"], pas="off"))} == {
        "base", "gits"}
    for text, needle in [
        (GRID + "[methods.amed_x]\n", "names no method"),
        (GRID.replace("warmup = 32", "warmup = 0"), "warmup must be at least 1"),
        (GRID.replace("warmup = 32", "metric = 'l3'"), "metric must be one of"),
        (GRID.replace("warmup = 32", "coef = 1.1"), "setting 'coef' is unknown"),
        (GRID.replace("warmup = 32", "coeff = '1.1'"), "coeff must be a float"),
        (GRID.replace("points = 21", "points = 5"), "cannot pick 5 steps from 5 fine-grid points"),
    ]:
        with pytest.raises(UserError, match=needle):
            build_plan(_grid(text))
    with pytest.raises(UserError, match="unknown method 'gist'"):
        build_plan(_grid(), Overrides(methods=["gist"]))
    with pytest.raises(UserError, match="PAS cannot correct heun"):
        build_plan(_grid(GRID.replace('solvers = ["ipndm"]\nnfe = [5]', 'solvers = ["heun"]')),
                   Overrides(solvers=["ddim", "heun"], nfe=[4], pas="off"))


def _run_grid(root, text: str):
    """Run the grid ``text`` into root/out with the cache root/cache; returns ``root``."""
    grid = root / "grid.toml"
    grid.write_text(text)
    argv = ["--grid", str(grid), "--out", str(root / "out"), "--cache-dir", str(root / "cache"),
            "--quiet"]
    assert main(argv) == 0
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One small run of the grid: 13 cells on gmm2d."""
    return _run_grid(tmp_path_factory.mktemp("methods"), GRID)


def test_run_stores_the_method_and_the_searched_schedule(store):
    rows = [json.loads(line) for path in (store / "out").glob("*.jsonl")
            for line in path.read_text().splitlines()]
    assert [r["method"] for r in rows].count("gits") == 4
    searched = {(r["solver"], r["nfe"]): r for r in rows if r["method"] == "gits"}
    both = next(r for r in rows if r["method"] == "gits_pas")
    times = searched[("ipndm", 5)]["method_fit"]["gits"]["times"]
    # GITS + PAS samples and fits on the GITS schedule of the same solver and NFE.
    assert both["method_fit"]["gits"]["times"] == times and both["pas_params"] is not None
    assert len(times) == 6 and times[0] == 80.0 and times[-1] == 0.002
    for row in searched.values():
        fit = row["method_fit"]["gits"]
        assert fit["indices"][0] == 0 and fit["indices"][-1] == 20
        assert row["pas_params"] is None and row["method_settings"]["gits"]["warmup"] == 32
    # Four searches, one teacher solve on the 21-point grid (32 seeds x 40 NFE) shared by all.
    artifacts = [gits.GITSArtifact.load(p) for p in (store / "cache" / "gits").glob("*.json")]
    assert len(artifacts) == 4
    assert sum(not a.teacher["cached"] for a in artifacts) == 1
    assert {a.teacher["nfe"] for a in artifacts} == {40}
    assert all(a.evaluations == 20 and a.warmup == 32 for a in artifacts)
    # Rerunning skips every stored cell.
    assert main(["--grid", str(store / "grid.toml"), "--out", str(store / "out"), "--cache-dir",
                 str(store / "cache"), "--quiet"]) == 0
    assert len(list((store / "out").glob("*.jsonl"))) == 1


def test_dry_run_counts_the_gits_search(store, capsys):
    fresh = store / "fresh-cache"
    assert main(["--grid", str(store / "grid.toml"), "--out", str(store / "dry"),
                 "--cache-dir", str(fresh), "--dry-run"]) == 0
    text = capsys.readouterr().out
    # One 21-point Heun teacher for 32 warm-up seeds; 20 directions per seed per search.
    assert "gits_teacher 1,280" in text and f"gits_search {4 * 20 * 32:,}" in text
    assert not fresh.exists()


def test_report_rows_and_gains_of_every_method(store):
    cells = with_labels(load_rows([store / "out"]).pipe(lambda f: f.assign(
        created_at=pd.to_datetime(f["created_at"], utc=True))))
    table = metric_table(cells)
    assert list(table.text.index) == ["DDIM", "DDIM + PAS", "DDIM + GITS", "iPNDM", "iPNDM + PAS",
                                      "iPNDM + GITS", "iPNDM + GITS + PAS"]
    gains = gain_table(cells)
    assert list(gains.text.index) == ["DDIM + PAS", "DDIM + GITS", "iPNDM + PAS", "iPNDM + GITS",
                                      "iPNDM + GITS + PAS"]
    by = cells.set_index(["method", "nfe"])["value"]
    expected = (by[("iPNDM", 5)] - by[("iPNDM + GITS", 5)]) / by[("iPNDM", 5)]
    assert gains.text.at["iPNDM + GITS", "5"].startswith(f"{100 * expected:+.1f}% ± ")


def test_old_stores_without_the_axis_load_compare_and_report(tmp_path, capsys):
    old = [make_row("gmm2d", "ddim", 4, pas) for pas in (False, True)]
    write_rows(tmp_path / "old" / "run.jsonl", old)
    assert list(load_rows([tmp_path / "old"])["method"]) == ["base", "pas"]
    new = [{**row, "method": "pas" if row["pas"] else "base", "method_settings": None,
            "method_fit": None} for row in old]
    write_rows(tmp_path / "new" / "run.jsonl", new)
    assert compare_main([str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.startswith("2 cells matched, 0 changed")
    labelled = with_labels(pd.DataFrame(old).assign(created_at=pd.Timestamp(0, tz="UTC")))
    assert list(labelled["method"]) == ["DDIM", "DDIM + PAS"]


def test_published_accelerator_figures_beside_measured():
    rows = [make_row("cifar10", "ipndm", 5, False, metric="fid", value=13.0),
            make_row("cifar10", "ipndm", 5, False, metric="fid", value=8.0, method="gits",
                     config_hash="g")]
    cells = with_labels(pd.DataFrame(rows).assign(created_at=pd.Timestamp(0, tz="UTC")))
    # The schema and two rows of shared/data/published_fid_accelerators.csv.
    accelerators = pd.read_csv(io.StringIO(
        "dataset,base_solver,method,nfe,fid,source\n"
        "cifar10,ipndm,base,5,13.59,GITS README\ncifar10,ipndm,gits,5,8.38,GITS README\n"
        "cifar10,ipndm,amed_plugin,5,6.61,AMED README\n"))
    solvers_csv = pd.DataFrame({"dataset": ["cifar10"], "solver": ["ipndm"], "pas": ["false"],
                                "nfe": [5], "fid": [13.59], "source": ["README"]})
    published = pd.concat([published_methods(solvers_csv), published_methods(accelerators)])
    table = published_table(cells, published)
    assert list(table.text.index) == ["iPNDM", "iPNDM + GITS"]
    assert list(table.text["Published"]) == ["13.59", "8.38"]
    assert list(table.text["Difference"]) == ["-0.59", "-0.38"]


@pytest.mark.invariance
def test_two_gloo_ranks_search_once_and_match_one_process(tmp_path):
    """GITS, GITS + PAS and AMED under torchrun: rank 0 searches (also inside the shared teacher's
    set-up, where rank 1 is not waiting) and fits, both ranks meet at every barrier, the numbers
    are the one process's."""
    grid = tmp_path / "grid.toml"
    text = (GRID.replace("blocks = 4", "blocks = 4\ndtype = \"float64\"")
            + "[methods.amed]\ntrajectories = 16\n")
    grid.write_text(text.replace('solvers = ["ddim", "ipndm"]\nnfe = [4, 5]',
                                 'solvers = ["ipndm"]\nnfe = [5]'))
    common = ["--grid", str(grid), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1")]) == 0
    done = run_cli(*common, "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2"),
                   module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "bench.run"))
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = by_hash(read_rows(tmp_path / "one")), by_hash(read_rows(tmp_path / "two"))
    assert sorted(row["method"] for row in two.values()) == ["amed", "base", "gits", "gits_pas",
                                                             "pas"]
    for key, row in one.items():
        fit = row.pop("method_fit") or {}
        got = two[key].pop("method_fit") or {}
        assert {k: v["times"] for k, v in fit.items()} == {k: v["times"] for k, v in got.items()}
    assert_same_numbers(two, one)


# GRID's [grid] table in float64 without PAS, and AMED with small training settings.
AMED_GRID = GRID.split("[pas]")[0] + """dtype = "float64"
pas = "off"
[methods.amed]
trajectories = 48
epochs = 2
"""


def test_amed_cells_join_the_plan_and_bad_nfe_or_solver_is_a_plan_error():
    cells = build_plan(_grid(AMED_GRID))
    assert [(c.solver, c.nfe, c.method) for c in cells] == [
        (s, n, m) for s in ("ddim", "ipndm") for n in (4, 5) for m in ("base", "amed")]
    plain = build_plan(_grid(AMED_GRID.split("[methods.amed]")[0]))
    assert {c.config_hash for c in plain} == {c.config_hash for c in cells if c.method == "base"}
    amed_cell = next(c for c in cells if c.method == "amed")
    assert amed_cell.method_settings == {"amed": {**methods.FITTER_DEFAULTS["amed"],
                                                  "trajectories": 48, "epochs": 2}}
    # NFE 5 runs with AFS ("auto"), 4 without: 3 and 2 steps.
    steps = {c.nfe: methods.amed_steps(c.method_settings["amed"], c.nfe, c.options)
             for c in cells if c.method == "amed"}
    assert steps == {4: 2, 5: 3}
    for text, needle in [
        (AMED_GRID + 'afs = "off"\n', "needs an even nfe >= 2 \\(got 5\\)"),
        (AMED_GRID + 'afs = "on"\n', "needs an odd nfe >= 1 \\(got 4\\)"),
        (AMED_GRID + 'afs = "maybe"\n', "afs must be one of auto, on, off"),
        (AMED_GRID + "lr = 0.0\n", "lr must be positive"),
        (AMED_GRID.replace('"ipndm"]', '"heun"]'), "AMED plugs into ddim, ipndm, dpmpp"),
    ]:
        with pytest.raises(UserError, match=needle):
            build_plan(_grid(text))


def test_amed_bad_nfe_is_one_line_on_stderr(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(AMED_GRID + 'afs = "off"\n')
    done = run_cli("--grid", str(grid), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.strip().splitlines() == [(
        "bench.run: error: gmm2d ddim nfe=5 amed: AMED with afs=False and denoise_to_zero=False "
        "needs an even nfe >= 2 (got 5)")]


@pytest.fixture(scope="module")
def amed_store(tmp_path_factory):
    """One small float64 run with AMED cells: 8 cells on gmm2d."""
    return _run_grid(tmp_path_factory.mktemp("amed"), AMED_GRID)


def test_amed_run_samples_with_the_trained_predictor(amed_store):
    rows = read_rows(amed_store / "out")
    trained = {(r["solver"], r["nfe"]): r for r in rows if r["method"] == "amed"}
    assert len(trained) == 4
    artifacts = {(a.solver, a.nfe): a for a in map(
        amed.AMEDArtifact.load, (amed_store / "cache" / "amed").glob("*.json"))}
    assert artifacts.keys() == trained.keys()
    # One teacher solve serves all four fits: the first counts it, the others find it stored.
    assert sum(not a.teacher["cached"] for a in artifacts.values()) == 1
    den = get_dataset("gmm2d").build(dtype=torch.float64)
    latents, _ = solvers.latents_for_seeds(range(64), den.shape, dtype=torch.float64)
    for key, row in trained.items():
        art, fit = artifacts[key], row["method_fit"]["amed"]
        assert (fit["steps"], fit["afs"]) == ({4: 2, 5: 3}[key[1]], key[1] == 5)
        assert fit["times"] == art.times and fit["fit_s"] == art.fit_seconds
        teacher = 0 if art.teacher["cached"] else art.teacher["nfe"] * 48
        assert fit["evaluations"] == amed.fit_evaluations(key[1], 48, 2) + teacher
        assert art.training["trajectories"] == 48 and art.features == "pooled-input"
        assert row["method_settings"]["amed"]["trajectories"] == 48
        # The stored preview is what amed.sample gives with the cached predictor.
        with np.load(amed_store / "out" / row["preview"]) as preview:
            samples = preview["samples"]
            path = preview["trajectory"]
        expected, states = amed.sample(den, latents, art, return_trajectory=True)
        # (previews are stored in float32)
        np.testing.assert_allclose(samples, expected.numpy(), rtol=1e-6, atol=1e-7)
        assert path.shape[0] == fit["steps"] + 1
        np.testing.assert_allclose(path, states.numpy(), rtol=1e-6, atol=1e-7)


def test_amed_dry_run_report_and_compare(amed_store, capsys):
    assert main(["--grid", str(amed_store / "grid.toml"), "--out", str(amed_store / "dry"),
                 "--cache-dir", str(amed_store / "fresh"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    # Training: 2 epochs x 48 trajectories x NFE, plus a probe call, per fit.
    assert f"amed_training {sum(2 * 48 * n + 1 for n in (4, 5, 4, 5)):,}" in text
    teacher = amed.AMEDArtifact.load(next((amed_store / "cache" / "amed").glob("*.json"))).teacher
    assert f"amed_teacher {teacher['nfe'] * 48:,}" in text
    # With the cache the run made, nothing is left to train.
    assert main(["--grid", str(amed_store / "grid.toml"), "--out", str(amed_store / "dry"),
                 "--cache-dir", str(amed_store / "cache"), "--dry-run", "--force"]) == 0
    assert "amed_teacher 0, amed_training 0" in capsys.readouterr().out
    cells = with_labels(load_rows([amed_store / "out"]).pipe(lambda f: f.assign(
        created_at=pd.to_datetime(f["created_at"], utc=True))))
    assert list(metric_table(cells).text.index) == ["DDIM", "DDIM + AMED", "iPNDM",
                                                    "iPNDM + AMED"]
    gains = gain_table(cells)
    by = cells.set_index(["method", "nfe"])["value"]
    expected = (by[("iPNDM", 4)] - by[("iPNDM + AMED", 4)]) / by[("iPNDM", 4)]
    assert gains.text.at["iPNDM + AMED", "4"].startswith(f"{100 * expected:+.1f}% ± ")
    assert compare_main([str(amed_store / "out"), str(amed_store / "out")]) == 0
    assert capsys.readouterr().out.startswith("8 cells matched, 0 changed")


def test_amed_cell_on_a_checkpoint_trains_on_its_bottleneck(tmp_path):
    """A tiny EDM-format network as the CIFAR-10 checkpoint: the predictor reads the bottleneck
    hook (64 pooled numbers), and the cell samples with it."""
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\ndatasets = ["cifar10"]\nsolvers = ["ipndm"]\nnfe = [4]\n'
                    'num_samples = 6\nbatch_size = 6\nblocks = 2\npas = "off"\n'
                    "[methods.amed]\ntrajectories = 4\nteacher_nfe = 8\n")
    argv = ["--grid", str(grid), *local_cifar10_options(tmp_path), "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0
    base, trained = read_rows(tmp_path / "out")
    assert (base["method"], trained["method"]) == ("base", "amed")
    assert trained["method_fit"]["amed"]["features"] == "bottleneck"
    (path,) = (tmp_path / "cache" / "amed").glob("*.json")
    art = amed.AMEDArtifact.load(path)
    assert art.feature_dim == 64 and art.training["trajectories"] == 4
    assert np.isfinite(trained["value"]) and trained["value"] != base["value"]
