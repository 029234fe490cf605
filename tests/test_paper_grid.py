"""The paper grid: 230 cells (EDM, LSUN Bedroom and Stable Diffusion) in the published settings,
planned without downloading anything."""

import itertools
import math
import os
import subprocess
import sys

import torch

from bench.grids import load_grid
from bench.models.registry import get_dataset
from bench.plan import build_plan, fit_memory_lines

DATASETS = ["cifar10", "ffhq", "imagenet64", "lsun_bedroom"]
SOLVERS = ["ddim", "ipndm", "deis", "dpmpp", "unipc"]
NFES = {name: [4, 5, 6, 8, 10] for name in DATASETS} | {"lsun_bedroom": [5, 6, 8, 10]}
SD_NFES = [5, 6, 8, 10]
# (dataset, solver, nfe, pas) of every cell: 3 x 5 x 5 x 2 + 5 x 4 x 2 for LSUN Bedroom and for
# Stable Diffusion (ms_coco).
CELLS = {
    (dataset, solver, nfe, pas)
    for dataset in DATASETS
    for solver, nfe, pas in itertools.product(SOLVERS, NFES[dataset], ["off", "on"])
} | set(itertools.product(["ms_coco"], SOLVERS, SD_NFES, ["off", "on"]))
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


def test_dry_run_lists_all_230_cells_and_downloads_nothing(tmp_path):
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
        if len(words) > 4 and words[0].isdigit():
            rows.add((words[1], words[2], int(words[3]), words[4]))
    assert rows == CELLS and len(rows) == 230
    # One teacher solve per dataset serves its 5 solvers x its NFEs; a fit holds the states of
    # its NFE + 1 times for the 5,000 + 500 held-out float32 trajectories.
    for name in DATASETS:
        fits = len(SOLVERS) * len(NFES[name])
        held = 11 * 5500 * math.prod(get_dataset(name).shape) * 4 / 2**30
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"PAS teacher for {name}:"))
        assert f"one solve for {fits} fit(s)" in line and "x 5,500 seeds" in line
        assert line.endswith(f"a fit holds {held:,.1f} GiB of them in memory")
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
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_cells_use_the_reference_solver_settings_and_the_pas_paper_settings():
    cells = build_plan(load_grid("paper"))
    assert {(c.dataset, c.solver, c.nfe, "on" if c.pas else "off") for c in cells} == CELLS
    assert len(cells) == 230
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
        if cell.pas:
            assert {key: cell.pas_settings[key] for key in PAPER_PAS} == PAPER_PAS
        else:
            assert cell.pas_settings is None
    base = {(c.dataset, c.solver, c.nfe): (c.schedule, c.options) for c in cells if not c.pas}
    assert all(
        base[(c.dataset, c.solver, c.nfe)] == (c.schedule, c.options) for c in cells if c.pas
    )
