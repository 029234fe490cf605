"""pytest-benchmark: one ms_coco cell on the tiny random-weight SD pipeline, split by where the
time goes (UNet, VAE, Inception, text encoder and CLIP, the Frechet distance, the rest).

The rest is the harness: latents and labels, solver arithmetic, 8-bit conversion, accumulating
moments, previews' bookkeeping. The normal suite runs 4 samples once; ``PAS_BENCH_FULL=1`` runs
the 64 samples of the issue's overhead figure (print them with -s). Workflow: README.md here.
"""
from __future__ import annotations

import os
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sd_tiny import write_captions, write_clip, write_pipeline

from bench.distributed import World
from bench.grids import Grid
from bench.metrics.inception import FEATURE_DIM, load_inception
from bench.plan import Overrides, build_plan
from bench.results import RunFile
from bench.run import Runner

SAMPLES = 64 if os.environ.get("PAS_BENCH_FULL") == "1" else 4


class Clock:
    """Adds up wall-clock seconds per label over forward calls of hooked modules."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._began: dict[int, float] = {}

    def hook(self, module: torch.nn.Module, label: str) -> None:
        def before(mod, _):
            self._began[id(mod)] = time.perf_counter()

        def after(mod, _, __):
            spent = time.perf_counter() - self._began.pop(id(mod))
            self.seconds[label] = self.seconds.get(label, 0.0) + spent

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def wrap(self, owner: object, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - began

        setattr(owner, name, timed)


def test_sd_cell_overhead(benchmark, tmp_path):
    model = write_pipeline(tmp_path / "pipe")
    clip = write_clip(tmp_path / "clip")
    captions = write_captions(tmp_path / "captions.csv", SAMPLES)
    weights = tmp_path / "inception.pt"
    torch.save(load_inception(random_weights=True).state_dict(), weights)
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(FEATURE_DIM, 16)) * 0.1
    np.savez(tmp_path / "ref.npz", mu=rng.normal(size=FEATURE_DIM), sigma=factor @ factor.T)
    grid = Grid(name="sd-overhead", source="-", datasets=("ms_coco",), solvers=("ddim",),
                nfe=(10,), pas="off", num_samples=SAMPLES)
    overrides = Overrides(model_path=str(model), ref_stats={"ms_coco": str(tmp_path / "ref.npz")},
                          inception_weights=str(weights), captions=str(captions),
                          clip_model=str(clip))
    (cell,) = build_plan(grid, overrides)
    args = Namespace(save_images=None, quiet=True, model_path=str(model),
                     ref_stats=str(tmp_path / "ref.npz"), inception_weights=str(weights),
                     clip_model=str(clip))
    runner = Runner(args, World(), torch.device("cpu"), "sd-overhead", RunFile(tmp_path, "bench"),
                    tmp_path / "cache")
    # Once-per-run work (loading the networks and the reference) is done before timing.
    denoiser = runner.denoiser(cell)
    runner.accumulator(cell)
    _, reference = runner.metric(cell)
    clock = Clock()
    parts = denoiser.parts
    for module, label in ((parts.unet, "unet"), (parts.vae, "vae"), (runner._inception,
                          "inception"), (parts.text_encoder, "text+clip"),
                          (runner._clip.model, "text+clip")):
        clock.hook(module, label)
    clock.wrap(parts.vae, "decode", "vae")
    clock.wrap(reference, "distance", "frechet")

    def run():
        clock.seconds.clear()
        began = time.perf_counter()
        row = runner.run_cell(cell)
        return row, time.perf_counter() - began

    row, wall = benchmark.pedantic(run, rounds=1, iterations=1)
    networks = sum(clock.seconds.values())
    split = {**{f"{k}_s": v for k, v in clock.seconds.items()}, "wall_s": wall,
             "s_per_image": wall / SAMPLES, "harness_s": wall - networks,
             "harness_fraction": (wall - networks) / wall}
    benchmark.extra_info.update(split)
    print(f"\nms_coco tiny SD, ddim nfe 10, {SAMPLES} samples (+ {SAMPLES} preview): "
          + ", ".join(f"{k} {v:.3g}" for k, v in split.items()))
    assert np.isfinite(row["value"]) and row["unet_evals"] == 20 and row["clip_score"] >= 0
