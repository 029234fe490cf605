"""Fitting the shared coordinates of one step (pas-spec §4-§6, decisions 0.5 and 0.6).

Every sample s moves to ``x_s + dt * sum_j c_j u_{s,j}``; the coordinates c are shared by all
samples and chosen so that this matches the teacher's state. L2 is linear least squares in c and is
solved exactly; L1 and pseudo-Huber use full-batch Adam from the reference start (§4.1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

LOSSES = ("L1", "L2", "pseudo_huber")
PSEUDO_HUBER_C = 0.03
# Early stopping: the last `early_stop` epoch losses may differ by at most this much (pas-spec 5.4).
FLAT_TOLERANCE = 1e-5


def loss_name(name: str) -> str:
    """The canonical spelling of a loss name (any case), or ValueError listing the valid ones."""
    for valid in LOSSES:
        if name.lower() == valid.lower():
            return valid
    raise ValueError(f"unknown PAS loss {name!r}; valid: {', '.join(LOSSES)}")


def loss_value(name: str, residual: Tensor) -> Tensor:
    """The loss of residuals [S, D] (prediction - target): a 0-d tensor."""
    if name == "L1":
        return residual.abs().mean()
    if name == "L2":
        return residual.square().mean()
    if name == "pseudo_huber":
        per_sample = torch.sqrt(residual.square().mean(dim=1) + PSEUDO_HUBER_C**2)
        return (per_sample - PSEUDO_HUBER_C).mean()
    raise ValueError(f"unknown PAS loss {name!r}; valid: {', '.join(LOSSES)}")


def accept(loss_before: float, loss_after: float, tau: float) -> bool:
    """The reference's acceptance rule (pas-spec 6.2): keep a step iff it gains more than tau."""
    return loss_after < loss_before - tau


def is_flat(history: list[float], window: int) -> bool:
    """True when the last ``window`` losses differ consecutively by at most FLAT_TOLERANCE."""
    if window < 1 or len(history) < window:
        return False
    tail = history[-window:]
    return all(abs(b - a) <= FLAT_TOLERANCE for a, b in itertools.pairwise(tail))


@dataclass(frozen=True)
class FitSettings:
    """How the coordinates of one step are optimised."""

    loss: str = "L1"
    lr: float = 0.01
    epochs: int = 1000
    early_stop: int = 10


def least_squares_coords(offset: Tensor, basis: Tensor, dt: float) -> Tensor:
    """The exact L2 minimiser of mean ||offset + dt * sum_j c_j u_j||^2 over shared c.

    offset [S, D] is x - target, basis [S, q, D]. The normal equations are
    (sum_s U_s U_s^T) c = -(sum_s U_s offset_s) / dt, solved in float64 (least-squares solve, so a
    coordinate no sample uses gets 0 instead of a singular system).
    """
    u = basis.to(torch.float64)
    gram = torch.einsum("sid,sjd->ij", u, u)
    rhs = -torch.einsum("sid,sd->i", u, offset.to(torch.float64)) / dt
    coords = torch.linalg.lstsq(gram.cpu(), rhs.cpu()[:, None], driver="gelsd").solution[:, 0]
    return coords.to(device=basis.device, dtype=basis.dtype)


class Objective:
    """L1 or pseudo-Huber loss of the shared coordinates c, and its gradient in c.

    The gradient is written out instead of taken by autograd: each epoch is then three passes over
    preallocated buffers (prediction, elementwise derivative, projection onto the basis). Autograd
    allocated several S*D temporaries per epoch, and at S*D ~ 1e5..1e7 that allocation (page
    faults) cost more than the arithmetic. ``tests/test_pas_search.py`` checks it against autograd.
    """

    def __init__(self, name: str, offset: Tensor, basis: Tensor, dt: float):
        if name not in ("L1", "pseudo_huber"):
            raise ValueError(f"no gradient-based fit for loss {name!r}")
        self.name = name
        self.samples, q, self.dim = basis.shape
        # Coordinate-major layout: the prediction is one matrix-vector product per epoch.
        self.flat_basis = basis.transpose(0, 1).reshape(q, -1)
        self.offset = offset.reshape(-1)
        self.dt = dt
        self.residual = torch.empty_like(self.offset)
        self.work = torch.empty_like(self.offset)

    def __call__(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, d loss / d coords) at ``coords``."""
        r, w = self.residual, self.work
        torch.addmv(self.offset, self.flat_basis.T, coords, alpha=self.dt, out=r)
        if self.name == "L1":
            value = torch.abs(r, out=w).mean()
            torch.sign(r, out=w)
            scale = 1.0 / r.numel()
        else:
            c = PSEUDO_HUBER_C
            per_sample = torch.mul(r, r, out=w).view(self.samples, self.dim).mean(dim=1)
            root = torch.sqrt(per_sample + c**2)
            value = (root - c).mean()
            torch.div(
                r.view(self.samples, self.dim), root[:, None], out=w.view(self.samples, self.dim)
            )
            scale = 1.0 / r.numel()
        return value, (self.dt * scale) * (self.flat_basis @ w)


def adam_coords(
    offset: Tensor, basis: Tensor, dt: float, start: Tensor, settings: FitSettings
) -> tuple[Tensor, int]:
    """Full-batch Adam on L1 or pseudo-Huber: one step per epoch over all samples at once.

    Returns the coordinates after the last step and the number of epochs run.
    """
    objective = Objective(settings.loss, offset, basis, dt)
    coords = start.clone()
    optimiser = torch.optim.Adam([coords], lr=settings.lr)
    history: list[float] = []
    for _ in range(settings.epochs):
        value, coords.grad = objective(coords)
        optimiser.step()
        history.append(value.item())
        if is_flat(history, settings.early_stop):
            break
    return coords, len(history)


def fit_coords(
    offset: Tensor, basis: Tensor, dt: float, start: Tensor, settings: FitSettings
) -> tuple[Tensor, int]:
    """The fitted coordinates of one step and the epochs spent (0 for the closed-form L2)."""
    if settings.loss == "L2":
        return least_squares_coords(offset, basis, dt), 0
    return adam_coords(offset, basis, dt, start, settings)
