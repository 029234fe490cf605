"""The paper grid: 242 cells (EDM, LSUN Bedroom and Stable Diffusion, GITS and AMED on CIFAR-10)
in the published settings, planned without downloading anything."""

import itertools
import math
import os
import subprocess
import sys

from bench.grids import load_grid
from bench.models.registry import get_dataset
from bench.plan import build_plan

DATASETS = ["cifar10", "ffhq", "imagenet64", "lsun_bedroom"]
SOLVERS = ["ddim", "ipndm", "deis", "dpmpp", "unipc"]
NFES = {name: [4, 5, 6, 8, 10] for name in DATASETS} | {"lsun_bedroom": [5, 6, 8, 10]}
SD_NFES = [5, 6, 8, 10]
# (dataset, solver, nfe, method) of every cell: 3 x 5 x 5 x 2 + 5 x 4 x 2 for LSUN Bedroom and for
# Stable Diffusion (ms_coco), and GITS for CIFAR-10's ddim and ipndm at NFE 5, 6, 8, 10 (the
# GITS README's figure), and AMED for its ipndm at the same NFEs (the AMED figures in the grid).
CELLS = {
    (dataset, solver, nfe, method)
    for dataset in DATASETS
    for solver, nfe, method in itertools.product(SOLVERS, NFES[dataset], ["base", "pas"])
} | set(itertools.product(["ms_coco"], SOLVERS, SD_NFES, ["base", "pas"])) | set(
    itertools.product(["cifar10"], ["ddim", "ipndm"], [5, 6, 8, 10], ["gits"])) | set(
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
    "deis": ("time_uniform", {"rho": 2.0, "order": 4, "variant": "tab"}),
    "dpmpp": ("logsnr", {"order": 3, "lower_order_final": True}),
    "unipc": ("logsnr", {"order": 3, "variant": "bh2", "lower_order_final": True}),
}


def test_dry_run_lists_all_242_cells_and_downloads_nothing(tmp_path):
    env = {
        **os.environ,
        "PASBENCH_CACHE": str(tmp_path / "cache"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "bench.run", "--grid", "paper", "--dry-run"]
    command += ["--out", str(tmp_path / "results")]
    done = subprocess.run(
        command, env=env, capture_output=True, check=False, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rows = set()
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) > 5 and words[0].isdigit():
            rows.add((words[1], words[2], int(words[3]), words[5]))
    assert rows == CELLS and len(rows) == 242
    # 8 GITS searches on one 61-point Heun teacher (256 seeds x 120 NFE), 60 directions each.
    assert f"gits_teacher {256 * 120:,}, gits_search {8 * 60 * 256:,}" in done.stdout
    # 4 AMED fits (3, 3, 4 and 5 steps) share one Heun solve over 10,000 seeds: 81 steps where
    # their own grids take 51, 52 and 50; one training pass each over the 10,000 trajectories,
    # plus a probe call.
    assert f"amed_teacher {2 * 81 * 10_000:,}" in done.stdout
    assert f"amed_training {10_000 * (5 + 6 + 8 + 10) + 4:,})" in done.stdout
    # One teacher solve per dataset serves its 5 solvers x its NFEs; a fit holds the states of
    # its NFE + 1 times for the 5,000 + 500 held-out float32 trajectories.
    for name in DATASETS:
        fits = len(SOLVERS) * len(NFES[name])
        held = 11 * 5500 * math.prod(get_dataset(name).shape) * 4 / 2**30
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"PAS teacher for {name}:"))
        assert f"one solve for {fits} fit(s)" in line and "x 5,500 seeds" in line
        assert line.endswith(f"a fit holds {held:,.1f} GiB of them in memory")
    for spec in map(get_dataset, DATASETS):
        assert spec.model_url in done.stdout and spec.ref_stats_url in done.stdout
    assert "hub:stable-diffusion-v1-5/stable-diffusion-v1-5" in done.stdout
    assert "MS-COCO_val2014_30k_captions.csv" in done.stdout
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_cells_use_the_reference_solver_settings_and_the_pas_paper_settings():
    cells = build_plan(load_grid("paper"))
    assert {(c.dataset, c.solver, c.nfe, c.method) for c in cells} == CELLS
    assert len(cells) == 242
    for cell in cells:
        schedule, options = REFERENCE[cell.solver]
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
    base = {(c.dataset, c.solver, c.nfe): (c.schedule, c.options) for c in cells if not c.pas}
    assert all(
        base[(c.dataset, c.solver, c.nfe)] == (c.schedule, c.options) for c in cells if c.pas
    )
