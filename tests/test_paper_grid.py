"""The paper grid: 284 cells (EDM, LSUN Bedroom and Stable Diffusion, iPNDM at orders 4 and 3,
GITS on CIFAR-10) in the published settings, planned without downloading anything."""

import itertools
import math
import os
import subprocess
import sys
from collections import Counter

from bench.grids import load_grid
from bench.models.registry import get_dataset
from bench.plan import build_plan

DATASETS = ["cifar10", "ffhq", "imagenet64", "lsun_bedroom"]
# Solver entries of the grid; ipndm3 is ipndm at order 3, PAS's run.sh setting.
SOLVERS = ["ddim", "ipndm", "ipndm3", "deis", "dpmpp", "unipc"]
SOLVER_OF = {"ipndm3": "ipndm"}
NFES = {name: [4, 5, 6, 8, 10] for name in DATASETS} | {"lsun_bedroom": [5, 6, 8, 10]}
SD_NFES = [5, 6, 8, 10]
# (dataset, solver, nfe, method) of every cell, ipndm twice (orders 4 and 3): 3 x 6 x 5 x 2 + 6 x 4
# x 2 for LSUN Bedroom and for Stable Diffusion (ms_coco), and GITS for CIFAR-10's ddim and ipndm
# (order 4) at NFE 5, 6, 8, 10 (the GITS README's figure).
CELLS = Counter(
    (dataset, SOLVER_OF.get(entry, entry), nfe, method)
    for dataset in [*DATASETS, "ms_coco"]
    for entry, nfe, method in itertools.product(
        SOLVERS, SD_NFES if dataset == "ms_coco" else NFES[dataset], ["base", "pas"]
    )
) + Counter(itertools.product(["cifar10"], ["ddim", "ipndm"], [5, 6, 8, 10], ["gits"]))
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


def test_dry_run_lists_all_284_cells_and_downloads_nothing(tmp_path):
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
    rows = Counter()
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) > 5 and words[0].isdigit():
            rows[(words[1], words[2], int(words[3]), words[5])] += 1
    assert rows == CELLS and rows.total() == 284
    # 8 GITS searches on one 61-point Heun teacher (256 seeds x 120 NFE), 60 directions each.
    assert f"gits_teacher {256 * 120:,}, gits_search {8 * 60 * 256:,}" in done.stdout
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
    assert Counter((c.dataset, c.solver, c.nfe, c.method) for c in cells) == CELLS
    assert len(cells) == 284
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
