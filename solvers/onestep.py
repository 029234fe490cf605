"""One-step solvers: Euler/DDIM, EDM's Heun and DPM-Solver-2 (solvers-spec section 3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .stepper import Stepper


class DDIM(Stepper):
    """d~_i = d(x_i, t_i)."""

    def direction(self, i: int, x: Tensor) -> Tensor:
        return self.raw_direction(i, x)


class Heun(Stepper):
    """d~_i = (d_i + d(x_i + delta_i d_i, t_{i+1})) / 2, on every step including the last."""

    def direction(self, i: int, x: Tensor) -> Tensor:
        d = self.raw_direction(i, x)
        x_euler = torch.add(x, d, alpha=self.delta(i))
        return d.add_(self.ode_direction(i + 1, x_euler)).mul_(0.5)


class DPM2(Stepper):
    """DPM-Solver-2 with r = 1/2: d~_i = d(x_i + (t_mid - t_i) d_i, t_mid) at the geometric mean
    t_mid = sqrt(t_i t_{i+1}) of the step's ends; the weight of d_i, 1 - 1/(2r), is zero."""

    def direction(self, i: int, x: Tensor) -> Tensor:
        d = self.raw_direction(i, x)
        t_mid = math.sqrt(self.t[i] * self.t[i + 1])
        return self.ode_direction_at(t_mid, torch.add(x, d, alpha=t_mid - self.t[i]))
