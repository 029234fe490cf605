"""The paper grid: 288 cells (EDM, LSUN Bedroom and Stable Diffusion, iPNDM at orders 4 and 3,
GITS and AMED on CIFAR-10) in the published settings, planned without downloading anything."""

import itertools
import math
import os
import re
import subprocess
import sys
from collections import Counter

import pytest
import torch

from bench.cli import parse_args
from bench.errors import UserError
from bench.grids import load_grid, parse_grid
from bench.models.ms_coco import COCO_FID_STATS_URL
from bench.models.registry import get_dataset
from bench.plan import Overrides, build_plan, fit_memory_lines

DATASETS = ["cifar10", "ffhq", "imagenet64", "lsun_bedroom"]
# Solver entries of the grid; ipndm3 is ipndm at order 3, PAS's run.sh setting.
SOLVERS = ["ddim", "ipndm", "ipndm3", "deis", "dpmpp", "unipc"]
SOLVER_OF = {"ipndm3": "ipndm"}
NFES = {name: [4, 5, 6, 8, 10] for name in DATASETS} | {"lsun_bedroom": [5, 6, 8, 10]}
SD_NFES = [5, 6, 8, 10]
# (dataset, solver, nfe, method) of every cell, ipndm twice (orders 4 and 3): 3 x 6 x 5 x 2 + 6 x 4
# x 2 for LSUN Bedroom and for Stable Diffusion (ms_coco), GITS for CIFAR-10's ddim and ipndm
# (order 4) at NFE 5, 6, 8, 10 (the GITS README's figure), and AMED for its ipndm at the same NFEs
# (the AMED figures in the grid).
CELLS = Counter(
    (dataset, SOLVER_OF.get(entry, entry), nfe, method)
    for dataset in [*DATASETS, "ms_coco"]
    for entry, nfe, method in itertools.product(
        SOLVERS, SD_NFES if dataset == "ms_coco" else NFES[dataset], ["base", "pas"]
    )
) + Counter(itertools.product(["cifar10"], ["ddim", "ipndm"], [5, 6, 8, 10], ["gits"])) + Counter(
    itertools.product(["cifar10"], ["ipndm"], [5, 6, 8, 10], ["amed"]))
# pas-spec 9 (the official run.sh defaults).
PAPER_PAS = {
    "teacher": "heun",
    "teacher_nfe": 100,
    "trajectories": 5000,
    "k": 4,
    "use_xT": True,
    "loss": "L1",
    "lr": 0.01,
    "epochs": 1000,
    "early_stop": 10,
    "tau_first": 1e-4,
    "tau": 1e-4,
}
# solvers-spec 8.2, shared by the base and the PAS cell of each pair.
REFERENCE = {
    "ddim": ("polynomial", {"rho": 7.0}),
    "ipndm": ("polynomial", {"rho": 7.0, "order": 4}),
    "ipndm3": ("polynomial", {"rho": 7.0, "order": 3}),
    "deis": ("time_uniform", {"rho": 2.0, "order": 4, "variant": "tab"}),
    "dpmpp": ("logsnr", {"order": 3, "lower_order_final": True}),
    "unipc": ("logsnr", {"order": 3, "variant": "bh2", "lower_order_final": True}),
}


def _paper(tmp_path, *extra, offline=False):
    env = {
        **os.environ,
        "PASBENCH_CACHE": str(tmp_path / "cache"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "OMP_NUM_THREADS": "1",
        "PASBENCH_OFFLINE": "1" if offline else "",
    }
    command = [sys.executable, "-m", "bench.run", "--grid", "paper", *extra]
    command += ["--out", str(tmp_path / "results")]
    return subprocess.run(
        command, env=env, capture_output=True, check=False, text=True, timeout=120
    )


def test_dry_run_lists_all_288_cells_and_downloads_nothing(tmp_path):
    done = _paper(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    rows = Counter()
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) > 5 and words[0].isdigit():
            rows[(words[1], words[2], int(words[3]), words[5])] += 1
    assert rows == CELLS and rows.total() == 288
    # 8 GITS searches on one 61-point Heun teacher (256 seeds x 120 NFE), 60 directions each.
    assert f"gits_teacher {256 * 120:,}, gits_search {8 * 60 * 256:,}" in done.stdout
    # 4 AMED fits (3, 3, 4 and 5 steps) share one Heun solve over 10,000 seeds: 81 steps where
    # their own grids take 51, 52 and 50; one training pass each over the 10,000 trajectories,
    # plus a probe call.
    assert f"amed_teacher {2 * 81 * 10_000:,}" in done.stdout
    assert f"amed_training {10_000 * (5 + 6 + 8 + 10) + 4:,})" in done.stdout
    # One teacher solve per dataset serves its 6 solver entries x its NFEs (LSUN Bedroom's in
    # parts: see below), over the 5,000 + 500 held-out trajectories.
    for name in DATASETS:
        fits = len(SOLVERS) * len(NFES[name])
        lines = [x for x in done.stdout.splitlines()
                 if re.match(rf"PAS teacher for {name}( \(part \d of \d\))?:", x)]
        counts = [int(re.search(r"one solve for (\d+) fit", x)[1]) for x in lines]
        assert sum(counts) == fits and len(lines) == (3 if name == "lsun_bedroom" else 1)
        assert all("x 5,500 seeds" in line for line in lines)
    # The teacher cache on disk: per dataset its largest solve (21 of LSUN's 59 times per part,
    # the other datasets' 59 times in one solve), and the plan's peak, at most 150 GiB.
    disk = {m[1]: float(m[2].replace(",", "")) for m in re.finditer(
        r"PAS teacher cache for (\w+): ([\d,.]+) GiB on disk at most", done.stdout)}
    expected = {name: (21 if name == "lsun_bedroom" else 59) * 5500
                * math.prod(get_dataset(name).shape) * 4 / 2**30 for name in [*DATASETS, "ms_coco"]}
    assert disk == {name: round(size, 1) for name, size in expected.items()}
    # The dry run closes with the plan's peak teacher cache on disk.
    peak = re.fullmatch(r"PAS teacher cache on disk for the plan: ([\d,.]+) GiB at peak",
                        done.stdout.splitlines()[-1])
    assert float(peak[1]) == max(disk.values()) <= 150
    assert "the 3 solves cost 2,761,000 evaluations, one shared solve 1,342,000 for 237.7 GiB" in (
        done.stdout)
    # Each dataset's peak PAS fit memory on this CPU, from pas.memory's model: bounded by the
    # default chunk's 1 GiB working set, where one LSUN state of 5,500 trajectories is 4 GiB.
    memory = fit_memory_lines(build_plan(load_grid("paper")), tmp_path / "cache",
                              torch.device("cpu"))
    assert [line for line in done.stdout.splitlines() if line.startswith("PAS fit for")] == memory
    for name, line in zip([*DATASETS, "ms_coco"], memory, strict=True):
        peak = line.removeprefix(f"PAS fit for {name}: peak ").split(" on the host")[0]
        assert peak.endswith(" GiB") and float(peak.split()[0]) < 1.5, line
    for spec in map(get_dataset, DATASETS):
        assert spec.model_url in done.stdout and spec.ref_stats_url in done.stdout
    assert "hub:stable-diffusion-v1-5/stable-diffusion-v1-5" in done.stdout
    assert "MS-COCO_val2014_30k_captions.csv" in done.stdout
    # A reference for every FID dataset: the published statistics, to download.
    references = [x for x in done.stdout.splitlines() if x.startswith("FID reference for ")]
    assert references == [
        f"FID reference for {name}: {get_dataset(name).ref_stats_url} (to download); "
        f"{'clean' if name == 'ms_coco' else 'bilinear'} resize to 299x299"
        for name in [*DATASETS, "ms_coco"]]
    assert get_dataset("ms_coco").ref_stats_url == COCO_FID_STATS_URL
    assert COCO_FID_STATS_URL.endswith("text2image-benchmark/releases/download/v0.0.1/"
                                       "MS-COCO_val2014_fid_stats.npz")
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_offline_paper_run_stops_at_its_first_download(tmp_path):
    """Every FID dataset has a reference, so an offline run gets past planning and stops, exit 2
    with one line, at the first file it needs: the Inception weights of the first cell."""
    done = _paper(tmp_path, "--device", "cpu", offline=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert line.startswith("bench.run: error: cannot download https://") and "PASBENCH_OFFLINE" in line
    assert line.endswith(f"place it at {weights}")


def test_ref_stats_parse_as_dataset_path_pairs():
    given = ["--ref-stats", "cifar10=c.npz", "--ref-stats", "./a=b.npz"]
    assert parse_args(given).ref_stats == {"cifar10": "c.npz", None: "./a=b.npz"}
    assert parse_args([]).ref_stats is None
    with pytest.raises(UserError, match="--ref-stats cifar10=PATH is given twice"):
        parse_args([*given, "--ref-stats", "cifar10=d.npz"])
    with pytest.raises(UserError, match="expected DATASET=PATH"):
        parse_args(["--ref-stats", "cifar10="])


def test_ref_stats_choose_each_datasets_reference(tmp_path):
    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"statistics")
    grid = load_grid("paper")
    default = {c.config_hash: c for c in build_plan(grid)}
    cells = build_plan(grid, Overrides(ref_stats={"cifar10": str(mine), "ms_coco": "https://x/y.npz"}))
    by_dataset = {c.dataset: c.reference for c in cells}
    assert by_dataset == {"cifar10": str(mine), "ffhq": get_dataset("ffhq").ref_stats_url,
                          "imagenet64": get_dataset("imagenet64").ref_stats_url,
                          "lsun_bedroom": get_dataset("lsun_bedroom").ref_stats_url,
                          "ms_coco": "https://x/y.npz"}
    # Only the cells whose reference changed get new hashes.
    changed = {c.dataset for c in cells if c.config_hash not in default}
    assert changed == {"cifar10", "ms_coco"}
    # A bare path serves a plan with one FID dataset, else it must be named.
    (one,) = {c.reference for c in build_plan(grid, Overrides(datasets=["ffhq"],
                                                               ref_stats={None: str(mine)}))}
    assert one == str(mine)
    with pytest.raises(UserError, match="--ref-stats PATH needs exactly one FID dataset"):
        build_plan(grid, Overrides(ref_stats={None: str(mine)}))
    with pytest.raises(UserError, match="afhqv2 is not an FID dataset of this plan"):
        build_plan(grid, Overrides(ref_stats={"afhqv2": str(mine)}))
    with pytest.raises(UserError, match="no such file"):
        build_plan(grid, Overrides(ref_stats={"cifar10": str(tmp_path / "absent.npz")}))


def test_grid_key_ref_stats_and_the_command_line_over_it(tmp_path):
    mine, other = tmp_path / "mine.npz", tmp_path / "other.npz"
    mine.write_bytes(b"1")
    other.write_bytes(b"2")
    text = {"grid": {"datasets": ["cifar10", "ffhq"], "solvers": ["ddim"], "nfe": [5],
                     "pas": "off"},
            "datasets": {"cifar10": {"ref_stats": str(mine)}}}
    grid = parse_grid(text, "test.toml", "test")
    assert {c.dataset: c.reference for c in build_plan(grid)} == {
        "cifar10": str(mine), "ffhq": get_dataset("ffhq").ref_stats_url}
    overridden = build_plan(grid, Overrides(ref_stats={"cifar10": str(other)}))
    assert overridden[0].reference == str(other)
    with pytest.raises(UserError, match="ref_stats must be a path or URL string"):
        parse_grid({**text, "datasets": {"cifar10": {"ref_stats": 3}}}, "bad.toml", "bad")


def test_cells_use_the_reference_solver_settings_and_the_pas_paper_settings():
    cells = build_plan(load_grid("paper"))
    assert Counter((c.dataset, c.solver, c.nfe, c.method) for c in cells) == CELLS
    assert len(cells) == 288
    for cell in cells:
        entry = "ipndm3" if (cell.solver, cell.options.get("order")) == ("ipndm", 3) else cell.solver
        schedule, options = REFERENCE[entry]
        assert cell.schedule == schedule
        assert {key: cell.options[key] for key in options} == options
        assert not cell.options["afs"] and not cell.options["denoise_to_zero"]
        assert cell.metric == "fid"
        if "thresholding" in cell.options:  # pixels in [-1, 1] yes, SD latents no
            assert cell.options["thresholding"] == (cell.dataset != "ms_coco")
        if cell.dataset == "ms_coco":
            assert cell.num_samples == 10_000 and cell.batch_size == 6
            assert cell.conditioning["guidance"] == 7.5 and cell.nfe in SD_NFES
        else:
            assert cell.num_samples == 50_000 and cell.conditioning is None
        assert cell.batch_size == get_dataset(cell.dataset).default_batch_size
        if cell.method == "amed":  # the official launch.sh: 10k trajectories, batch 64
            settings = cell.method_settings["amed"]
            assert (settings["trajectories"], settings["batch_size"], settings["afs"]) == (
                10_000, 64, "auto")
        if cell.pas:
            assert {key: cell.pas_settings[key] for key in PAPER_PAS} == PAPER_PAS
        else:
            assert cell.pas_settings is None
    base = {(c.dataset, c.solver, c.nfe, c.options.get("order")): (c.schedule, c.options)
            for c in cells if not c.pas}
    assert all(
        base[(c.dataset, c.solver, c.nfe, c.options.get("order"))] == (c.schedule, c.options)
        for c in cells if c.pas
    )
