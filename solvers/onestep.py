"""One-step solvers: Euler/DDIM and EDM's Heun (solvers-spec section 3)."""

from __future__ import annotations

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
