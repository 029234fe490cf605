"""The paper grid: 150 cells in the published settings, planned without downloading anything."""

import itertools
import os
import subprocess
import sys

from bench.datasets import get_dataset
from bench.grids import load_grid
from bench.plan import build_plan

DATASETS = ["cifar10", "ffhq", "imagenet64"]
SOLVERS = ["ddim", "ipndm", "deis", "dpmpp", "unipc"]
NFES = [4, 5, 6, 8, 10]
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
    "dpmpp": ("logsnr", {"order": 3, "lower_order_final": True, "thresholding": True}),
    "unipc": (
        "logsnr",
        {"order": 3, "variant": "bh2", "lower_order_final": True, "thresholding": True},
    ),
}


def test_dry_run_lists_all_150_cells_and_downloads_nothing(tmp_path):
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
        if len(words) > 4 and words[0].isdigit() and words[1] in DATASETS:
            rows.add((words[1], words[2], int(words[3]), words[4]))
    expected = set(itertools.product(DATASETS, SOLVERS, NFES, ["off", "on"]))
    assert rows == expected and len(rows) == 150
    for spec in map(get_dataset, DATASETS):
        assert spec.model_url in done.stdout and spec.ref_stats_url in done.stdout
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_cells_use_the_reference_solver_settings_and_the_pas_paper_settings():
    cells = build_plan(load_grid("paper"))
    assert len(cells) == 150
    for cell in cells:
        schedule, options = REFERENCE[cell.solver]
        assert cell.schedule == schedule
        assert {key: cell.options[key] for key in options} == options
        assert not cell.options["afs"] and not cell.options["denoise_to_zero"]
        assert cell.num_samples == 50_000 and cell.metric == "fid"
        assert cell.batch_size == get_dataset(cell.dataset).default_batch_size
        if cell.pas:
            assert {key: cell.pas_settings[key] for key in PAPER_PAS} == PAPER_PAS
        else:
            assert cell.pas_settings is None
    base = {(c.dataset, c.solver, c.nfe): (c.schedule, c.options) for c in cells if not c.pas}
    assert all(
        base[(c.dataset, c.solver, c.nfe)] == (c.schedule, c.options) for c in cells if c.pas
    )
