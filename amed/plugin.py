"""The AMED plug-in step for euler (ddim), ipndm and dpmpp, as in the official code.

Step i runs the base solver over two sub-steps, t_i -> t_mid -> t_{i+1}, where the predictor
places t_mid = t_{i+1}^r * t_i^(1-r) for each sample:

1. the base's own first evaluation at (x_i, t_i) (AFS's analytic value at step 0), then the
   predictor reads the features of that call and returns (r, scale_dir, scale_time);
2. sub-step A, t_i -> t_mid, with the base's update rule on its history;
3. one denoiser call at noise level scale_time * t_mid, its direction divided by t_mid itself;
4. sub-step B, t_mid -> t_{i+1}, with the base's rule; for ddim/ipndm the whole increment is
   multiplied by scale_dir, for dpmpp only its data-prediction part (the x_i / t_i part is not).

The bases' histories run over the interleaved times t_0, t_mid,0, t_1, ..., so a multistep base
uses its intermediate evaluations like any other: ipndm with its constant Adams-Bashforth weights
(order min(order, j+1) at sub-step j), dpmpp with its weights at the actual times and the order
rule over 2N sub-steps. NFE is 2N, minus 1 with AFS, plus 1 with denoise_to_zero.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import solvers
from amed.features import Features
from amed.predictor import Predictor
from solvers.dpmpp import dpmpp_weights, multistep_order
from solvers.ipndm import AB_WEIGHTS
from solvers.thresholding import dynamic_threshold

BASES = ("ddim", "ipndm", "dpmpp")
Model = Callable[[Tensor, float | Tensor], Tensor]


def base_solver(solver: str) -> str:
    """The registered name of a base AMED plugs into (``euler`` is ``ddim``), or ValueError."""
    name = solvers.get_solver(solver).name
    if name not in BASES:
        raise ValueError(f"AMED plugs into {', '.join(BASES)} (euler = ddim), not {solver!r}")
    return name


def nfe_for_steps(steps: int, afs: bool = False, denoise_to_zero: bool = False) -> int:
    """Denoiser calls of N AMED steps: two per step, minus AFS's, plus the final denoising."""
    return 2 * steps - int(afs) + int(denoise_to_zero)


def steps_for_nfe(nfe: int, afs: bool = False, denoise_to_zero: bool = False) -> int:
    """The N with nfe_for_steps(N, afs, denoise_to_zero) == nfe, or ValueError."""
    steps, rest = divmod(nfe + int(afs) - int(denoise_to_zero), 2)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or rest or steps < 1:
        first = nfe_for_steps(1, afs, denoise_to_zero)
        parity = "an odd" if first % 2 else "an even"
        raise ValueError(
            f"AMED with afs={afs} and denoise_to_zero={denoise_to_zero} needs {parity} "
            f"nfe >= {first} (got {nfe!r})"
        )
    return steps


def plugin_times(denoiser, solver: str, steps: int, schedule, options: Mapping[str, Any]) -> Tensor:
    """The N+1 float64 times of the base's schedule with N steps (named or explicit)."""
    plain = {**options, "afs": False, "denoise_to_zero": False}
    return solvers.schedule_for(denoiser, solver, steps, schedule, **plain)


def model_for(denoiser, like: Tensor, class_labels: Tensor | None) -> Model:
    """denoiser(x, sigma[, labels]) for a float level or a per-sample [B] tensor of levels."""

    def model(x: Tensor, t: float | Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.tensor(t, dtype=like.dtype, device=like.device)
        if class_labels is None:
            return denoiser(x, t)
        return denoiser(x, t, class_labels)

    return model


@dataclass(frozen=True)
class Prediction:
    """The predictor's outputs for one step, each [B]."""

    r: Tensor
    scale_dir: Tensor
    scale_time: Tensor


def _per_sample(value: float | Tensor, x: Tensor) -> float | Tensor:
    """A [B] tensor shaped to broadcast against x; scalars unchanged."""
    if isinstance(value, Tensor) and value.dim() == 1:
        return value.reshape(-1, *[1] * (x.dim() - 1))
    return value


class PluginRun:
    """One AMED run of a base solver over ``times``; ``step(i, x)`` is called for i = 0..N-1.

    Histories are detached after every step, so training differentiates one step at a time
    (through the denoiser's call at t_mid), as the official training does.
    """

    def __init__(
        self,
        model: Model,
        features: Features,
        predictor: Predictor,
        solver: str,
        times: list[float],
        options: Mapping[str, Any],
    ) -> None:
        name = base_solver(solver)
        self.base = solvers.get_solver(name).stepper(model, times, options)
        self.model = model
        self.features = features
        self.predictor = predictor
        self.times = times
        self.num_steps = len(times) - 1
        self.dpmpp = name == "dpmpp"
        self.order = options.get("order", 1)
        self.lower_order_final = options.get("lower_order_final", False)
        self.thresholding = options.get("thresholding", False)
        self.history: deque[tuple[Tensor, float | Tensor]] = deque(maxlen=self.order)

    def step(self, i: int, x: Tensor) -> Tensor:
        """x_{i+1} from x_i, with the predictor's choice for this step."""
        t_cur = self.times[i]
        # The base's first evaluation: a direction for ddim/ipndm, a data prediction for dpmpp.
        value = self.base.data(i, x) if self.dpmpp else self.base.raw_direction(i, x)
        if i == 0 and self.base.afs:
            # No network call at the AFS step: the official code feeds zeros.
            feats = x.new_zeros(x.shape[0], self.predictor.feature_dim)
        else:
            feats = self.features(x, torch.tensor(t_cur, dtype=x.dtype, device=x.device))
        prediction = Prediction(*self.predictor(feats.to(x.dtype), t_cur, self.times[i + 1]))
        return self.advance(i, x, value, prediction)

    def advance(self, i: int, x: Tensor, value: Tensor, prediction: Prediction) -> Tensor:
        """Sub-steps A and B of step i from the first evaluation's ``value`` (steps 2-4)."""
        t_cur, t_next = self.times[i], self.times[i + 1]
        t_mid = t_next**prediction.r * t_cur ** (1 - prediction.r)
        x_mid = self._substep(2 * i, x, value, t_cur, t_mid, 1.0)
        denoised = self.model(x_mid, prediction.scale_time * t_mid)
        if self.dpmpp:
            mid_value = dynamic_threshold(denoised) if self.thresholding else denoised
        else:
            mid_value = (x_mid - denoised) / _per_sample(t_mid, x)
        x_next = self._substep(2 * i + 1, x_mid, mid_value, t_mid, t_next, prediction.scale_dir)
        self.history = deque(
            ((v.detach(), t.detach() if isinstance(t, Tensor) else t) for v, t in self.history),
            maxlen=self.order,
        )
        return x_next

    def _substep(
        self,
        j: int,
        x: Tensor,
        value: Tensor,
        t_from: float | Tensor,
        t_to: float | Tensor,
        scale: float | Tensor,
    ) -> Tensor:
        """x + (t_to - t_from) * slope: the base's update over sub-step j of the 2N."""
        self.history.append((value, t_from))
        newest_first = list(reversed(self.history))
        scale = _per_sample(scale, x)
        if self.dpmpp:
            order = multistep_order(j, 2 * self.num_steps, self.order, self.lower_order_final)
            times = [t for _, t in reversed(newest_first[:order])] + [t_to]
            a, c = dpmpp_weights(times)
            data = sum(_per_sample(ck, x) * m for ck, (m, _) in zip(c, newest_first))
            slope = _per_sample(a, x) * x + scale * data
        else:
            weights = AB_WEIGHTS[min(self.order, j + 1)]
            slope = scale * sum(w * d for w, (d, _) in zip(weights, newest_first))
        return x + _per_sample(t_to - t_from, x) * slope


def run(
    denoiser,
    latents: Tensor,
    solver: str,
    times: list[float],
    options: Mapping[str, Any],
    predictor: Predictor,
    features: Features,
    *,
    class_labels: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sample from x_0 = t_0 * latents; with ``return_trajectory`` also x_0..x_N [N+1, B, ...]."""
    model = model_for(denoiser, latents, class_labels)
    plugin = PluginRun(model, features, predictor, solver, times, options)
    x = latents * times[0]
    states = [x] if return_trajectory else None
    for i in range(len(times) - 1):
        x = plugin.step(i, x)
        if states is not None:
            states.append(x)
    if options.get("denoise_to_zero"):
        x = model(x, times[-1])
    return (x, torch.stack(states)) if return_trajectory else x
