"""``amed.fit``: train the predictor against teacher trajectories, as the official AMED code does.

Each batch of trajectories is walked step by step; every step is one Adam update on that step's
squared error against the teacher's state at t_{i+1} (summed over the state, averaged over the
batch), differentiated through the denoiser's call at t_mid. The next step starts from the
teacher's state for the single-step base (ddim: the official code found this slightly better) and
from the student's own detached output, with its history, for the multistep bases (ipndm, dpmpp).

The teacher's states at the student's N+1 times are passed in (bench owns the shared teacher);
``heun_teacher`` is a standalone fallback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

import solvers
from amed.artifact import AMEDArtifact, weights_of
from amed.features import Features, name_of, resolve
from amed.plugin import PluginRun, base_solver, model_for, plugin_times, steps_for_nfe
from amed.predictor import Predictor

SINGLE_STEP = ("ddim",)
# Fallback teacher seeds, disjoint from evaluation seeds 0..N-1 (the range PAS's teachers use).
TEACHER_SEED_START = 10_000_000


def heun_teacher(
    denoiser,
    latents: Tensor,
    times: Tensor,
    *,
    teacher_nfe: int = 100,
    class_labels: Tensor | None = None,
) -> Tensor:
    """Heun's states at ``times`` [N+1, B, ...]: each student interval split into M+1 steps
    uniform in log t, with M the fewest for about ``teacher_nfe`` calls."""
    steps = len(times) - 1
    stride = max(1, math.ceil(teacher_nfe / (2 * steps)))
    logs = times.to(torch.float64).cpu().log()
    frac = torch.arange(stride, dtype=torch.float64) / stride
    inner = logs[:-1, None] + frac[None] * (logs[1:] - logs[:-1])[:, None]
    fine = torch.cat([inner.reshape(-1).exp(), times[-1:].to(torch.float64).cpu()])
    fine[::stride] = times.to(torch.float64).cpu()
    _, trajectory = solvers.sample(
        denoiser, latents, "heun", 2 * (len(fine) - 1), schedule=fine,
        class_labels=class_labels, return_trajectory=True,
    )
    return trajectory[::stride]


def fit_evaluations(nfe: int, trajectories: int, epochs: int = 1) -> int:
    """Per-sample denoiser evaluations of a fit without its teacher: every trajectory walks its
    ``nfe`` calls once per epoch (the calls at t_mid also backpropagate), plus one probe call."""
    return epochs * trajectories * nfe + 1


def _walk(
    plugin: PluginRun, teacher: Tensor, single_step: bool
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(i, student's x_{i+1}, teacher's x_{i+1}) for each step of one batch of trajectories.

    The consumer may backpropagate through the student's state before asking for the next.
    """
    x = teacher[0]
    for i in range(len(teacher) - 1):
        out = plugin.step(i, x)
        yield i, out, teacher[i + 1]
        x = teacher[i + 1] if single_step else out.detach()


def squared_error(out: Tensor, target: Tensor) -> Tensor:
    """Per-step loss: the squared error summed over the state, averaged over the samples."""
    return (out - target).square().flatten(1).sum(1).mean()


def _feature_dim(model, features: Features, x: Tensor, t: float) -> int:
    """F, from one denoiser call on one sample (outside any sampled NFE) and its features."""
    with torch.no_grad():
        sigma = torch.tensor(t, dtype=x.dtype, device=x.device)
        model(x[:1], sigma)
        return int(features(x[:1], sigma).reshape(1, -1).shape[1])


def step_losses(
    denoiser,
    artifact: AMEDArtifact,
    teacher: Tensor,
    *,
    features: Features | None = None,
    class_labels: Tensor | None = None,
) -> list[float]:
    """Mean per-step squared error of the artifact's plug-in against ``teacher`` [N+1, S, ...],
    each step started the way training starts it."""
    features = resolve(denoiser, features)
    model = model_for(denoiser, teacher, class_labels)
    predictor = artifact.build_predictor(teacher.dtype, teacher.device)
    plugin = PluginRun(
        model, features, predictor, artifact.solver, artifact.times, artifact.options
    )
    with torch.no_grad():
        walk = _walk(plugin, teacher, artifact.solver in SINGLE_STEP)
        return [squared_error(out, target).item() for _, out, target in walk]


def _own_teacher(
    denoiser,
    times: Tensor,
    trajectories: int,
    teacher_nfe: int,
    where: tuple[torch.dtype, torch.device | str],
) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """(states, class labels, identity) of the fallback Heun teacher on the fallback seeds."""
    seeds = range(TEACHER_SEED_START, TEACHER_SEED_START + trajectories)
    dtype, device = where
    latents, labels = solvers.latents_for_seeds(
        seeds, denoiser.shape, dtype=dtype, device=device, label_dim=denoiser.label_dim
    )
    states = heun_teacher(denoiser, latents, times, teacher_nfe=teacher_nfe, class_labels=labels)
    identity = {"solver": "heun", "nfe": teacher_nfe, "seeds": [seeds.start, seeds.stop]}
    return states, labels, identity


def _check_hyper(batch_size: int, epochs: int, lr: float) -> None:
    if batch_size < 1 or epochs < 0 or not lr > 0:
        raise ValueError("batch_size must be >= 1, epochs >= 0 and lr > 0")


def _check(teacher: Tensor, steps: int, denoiser) -> None:
    want = (steps + 1, *denoiser.shape)
    if teacher.dim() < 2 or (teacher.shape[0], *teacher.shape[2:]) != want:
        raise ValueError(
            f"teacher must hold the states at the {steps + 1} student times: shape "
            f"[{steps + 1}, S, {', '.join(map(str, denoiser.shape))}], got {tuple(teacher.shape)}"
        )


def fit(
    denoiser,
    solver: str,
    nfe: int,
    *,
    teacher: Tensor | None = None,
    teacher_info: dict[str, Any] | None = None,
    features: Features | None = None,
    class_labels: Tensor | None = None,
    schedule: str | Tensor | Sequence[float] | None = None,
    trajectories: int = 256,
    teacher_nfe: int = 100,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 5e-3,
    seed: int = 0,
    scale_dir: float = 0.01,
    scale_time: float = 0.2,
    hidden_dim: int = 128,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    dataset: str | None = None,
    progress: bool = True,
    **solver_options: Any,
) -> AMEDArtifact:
    """Train AMED's predictor for ``solver`` (ddim/euler, ipndm, dpmpp) at exactly ``nfe`` calls.

    ``teacher``: the teacher's states at the plug-in's N+1 times, [N+1, S, *shape] (entry 0 is
    t_0 * latents), with ``teacher_info`` naming it for the artifact; without it, ``heun_teacher``
    solves ``trajectories`` seeds from TEACHER_SEED_START. ``features``: a features callable
    (amed.features), default the denoiser's ``amed_features`` or the pooled-input stand-in.
    ``epochs`` passes over the trajectories in batches of ``batch_size`` (the official run is one
    pass over 10k trajectories); ``epochs=0`` returns the untrained predictor.
    ``scale_dir``/``scale_time``: the outputs' half-widths (the official CIFAR-10 ipndm run's
    0.01 and 0.2). ``dtype``/``device`` (the fallback teacher's; default the denoiser's
    ``dtype``/``device`` attributes, else CPU float32). ``solver_options`` are the base solver's
    (afs, order, ...).
    """
    name = base_solver(solver)
    options = solvers.get_solver(name).resolve(solver_options)
    steps = steps_for_nfe(nfe, options["afs"], options["denoise_to_zero"])
    times = plugin_times(denoiser, name, steps, schedule, options)
    _check_hyper(batch_size, epochs, lr)  # before the fallback teacher's solve
    if teacher is None:
        dtype = dtype or getattr(denoiser, "dtype", torch.float32)
        device = device or getattr(denoiser, "device", "cpu")
        teacher, class_labels, teacher_info = _own_teacher(
            denoiser, times, trajectories, teacher_nfe, (dtype, device)
        )
    _check(teacher, steps, denoiser)
    features = resolve(denoiser, features)
    probe = model_for(denoiser, teacher, None if class_labels is None else class_labels[:1])
    tf = times.tolist()
    settings = {"hidden_dim": hidden_dim, "scale_dir": scale_dir, "scale_time": scale_time,
                "seed": seed}
    predictor = Predictor(_feature_dim(probe, features, teacher[0], tf[0]), **settings)
    predictor = predictor.to(device=teacher.device, dtype=teacher.dtype)
    began = time.perf_counter()
    losses = _train(
        predictor, denoiser, features, (name, tf, options), teacher, class_labels,
        (batch_size, epochs, lr, seed), progress,
    )
    return AMEDArtifact(
        dataset=dataset or denoiser.name,
        model=denoiser.name,
        solver=name,
        nfe=nfe,
        num_steps=steps,
        options=options,
        schedule=schedule if isinstance(schedule, str) or schedule is None else None,
        sigma_min=float(denoiser.sigma_min),
        sigma_max=float(denoiser.sigma_max),
        times=tf,
        features=name_of(features),
        feature_dim=predictor.feature_dim,
        predictor=settings,
        training={"optimizer": "adam", "lr": lr, "betas": [0.9, 0.999], "eps": 1e-8,
                  "batch_size": batch_size, "epochs": epochs, "trajectories": teacher.shape[1],
                  "fed": "teacher" if name in SINGLE_STEP else "own output"},
        teacher=dict(teacher_info or {}),
        train_losses=losses,
        fit_seconds=time.perf_counter() - began,
        weights=weights_of(predictor),
    )


def _train(
    predictor: Predictor,
    denoiser,
    features: Features,
    plan: tuple[str, list[float], dict[str, Any]],
    teacher: Tensor,
    class_labels: Tensor | None,
    hyper: tuple[int, int, float, int],
    progress: bool,
) -> list[float]:
    """Adam, one update per step of every batch; the last epoch's mean loss per step."""
    name, times, options = plan
    batch_size, epochs, lr, seed = hyper
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    order_gen = torch.Generator().manual_seed(seed)
    count = teacher.shape[1]
    losses = [0.0] * (len(times) - 1)
    batches = math.ceil(count / batch_size)
    with tqdm(total=epochs * batches, desc="AMED fit", unit="batch",
              disable=None if progress else True) as bar:
        for _ in range(epochs):
            losses = [0.0] * (len(times) - 1)
            order = torch.randperm(count, generator=order_gen).to(teacher.device)
            for start in range(0, count, batch_size):
                idx = order[start : start + batch_size]
                labels = None if class_labels is None else class_labels[idx]
                model = model_for(denoiser, teacher, labels)
                plugin = PluginRun(model, features, predictor, name, times, options)
                for i, out, target in _walk(plugin, teacher[:, idx], name in SINGLE_STEP):
                    optimizer.zero_grad(set_to_none=True)
                    loss = squared_error(out, target)
                    loss.backward()
                    for param in predictor.parameters():
                        # As the official loop: a non-finite gradient must not poison Adam.
                        if param.grad is not None:
                            torch.nan_to_num_(param.grad, nan=0.0, posinf=1e5, neginf=-1e5)
                    optimizer.step()
                    losses[i] += loss.item() * len(idx) / count
                bar.update()
    return losses
