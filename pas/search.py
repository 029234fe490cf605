"""Fitting the shared coordinates of one step (pas-spec §4-§6, decisions 0.5 and 0.6).

Every sample s moves to ``x_s + dt * sum_j c_j u_{s,j}``; the coordinates c are shared by all
samples and chosen so that this matches the teacher's state. All three losses are convex in the
q <= 4 coordinates, and the default (``optimizer="exact"``) finds their minimiser:

* L2 is linear least squares: closed form.
* pseudo-Huber depends on each sample's residual only through its norm, a quadratic in c with
  per-sample q x q data (U_s U_s^T, U_s o_s, |o_s|^2), so one pass over the data reduces the
  problem to S tiny quadratics, then minimised by damped Newton.
* L1 (see ``l1_coords``): Huber continuation on a stride through the residuals, then Huber on
  the residuals nearest zero with the others as sign-fixed linear terms, then a small linear
  programme that is exact within its box; only a few passes touch all residuals.

``optimizer="adam"`` is the reference's full-batch Adam from the reference start (§4.1, §5), kept
for paper parity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

LOSSES = ("L1", "L2", "pseudo_huber")
OPTIMIZERS = ("exact", "adam")
PSEUDO_HUBER_C = 0.03
# Early stopping: the last `early_stop` epoch losses may differ by at most this much (pas-spec 5.4).
FLAT_TOLERANCE = 1e-5
# Exact optimisers stop when an iteration lowers the loss by less than this fraction of it.
RELATIVE_TOLERANCE = 1e-10
MAX_ITERATIONS = 100
# L1: the rough fit sees about this many residuals (a fixed stride through all of them)...
SUBSAMPLE = 1 << 16
# ...the close fit keeps this fraction of them, those nearest zero, and the exact linear programme
# about this many (see l1_coords).
NEAR_FRACTION = 0.05
LP_POINTS = 200
F64 = torch.float64


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


def per_sample_loss(name: str, residual: Tensor) -> Tensor:
    """Each sample's loss [S] for residuals [S, ...]; ``loss_value`` is their mean."""
    flat = residual.reshape(len(residual), -1)
    if name == "L1":
        return flat.abs().mean(dim=1)
    if name == "L2":
        return flat.square().mean(dim=1)
    if name == "pseudo_huber":
        return torch.sqrt(flat.square().mean(dim=1) + PSEUDO_HUBER_C**2) - PSEUDO_HUBER_C
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
    """How the coordinates of one step are optimised (lr, epochs, early_stop: Adam only)."""

    loss: str = "L1"
    optimizer: str = "exact"
    lr: float = 0.01
    epochs: int = 1000
    early_stop: int = 10


def least_squares_coords(offset: Tensor, basis: Tensor, dt: float) -> Tensor:
    """The exact L2 minimiser of mean ||offset + dt * sum_j c_j u_j||^2 over shared c.

    offset [S, D] is x - target, basis [q, S, D] (coordinate-major). The normal equations are
    (sum_s U_s U_s^T) c = -(sum_s U_s offset_s) / dt, solved in float64 (least-squares solve, so a
    coordinate no sample uses gets 0 instead of a singular system).
    """
    flat = basis.reshape(basis.shape[0], -1)
    gram = (flat @ flat.T).to(F64)
    rhs = -(flat @ offset.reshape(-1)).to(F64) / dt
    coords = torch.linalg.lstsq(gram.cpu(), rhs.cpu()[:, None], driver="gelsd").solution[:, 0]
    return coords.to(device=basis.device, dtype=basis.dtype)


class Objective:
    """L1 or pseudo-Huber loss of the shared coordinates c, and its gradient in c (for Adam).

    The gradient is written out instead of taken by autograd: each epoch is then three passes over
    preallocated buffers (prediction, elementwise derivative, projection onto the basis). Autograd
    allocated several S*D temporaries per epoch, and at S*D ~ 1e5..1e7 that allocation (page
    faults) cost more than the arithmetic. ``tests/test_pas_search.py`` checks it against autograd.
    """

    def __init__(self, name: str, offset: Tensor, basis: Tensor, dt: float):
        if name not in ("L1", "pseudo_huber"):
            raise ValueError(f"no gradient-based fit for loss {name!r}")
        self.name = name
        q, self.samples, self.dim = basis.shape
        self.flat_basis = basis.reshape(q, -1)
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
        else:
            c = PSEUDO_HUBER_C
            per_sample = torch.mul(r, r, out=w).view(self.samples, self.dim).mean(dim=1)
            root = torch.sqrt(per_sample + c**2)
            value = (root - c).mean()
            torch.div(
                r.view(self.samples, self.dim), root[:, None], out=w.view(self.samples, self.dim)
            )
        return value, (self.dt / r.numel()) * (self.flat_basis @ w)


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


def _improved(old: float, new: float) -> bool:
    return new < old - RELATIVE_TOLERANCE * abs(old)


def _solve_small(matrix: Tensor, vector: Tensor) -> Tensor:
    """Least-squares solution of matrix @ x = vector (q x q, float64 on the CPU)."""
    solved = torch.linalg.lstsq(matrix.cpu().to(F64), vector.cpu().to(F64)[:, None], driver="gelsd")
    return solved.solution[:, 0]


def _huber(r: Tensor, delta: float) -> float:
    a = r.abs()
    return float(torch.where(a < delta, a * a / (2 * delta), a - delta / 2).sum(dtype=F64))


def _huber_newton(
    design: Tensor, offset: Tensor, linear: Tensor, coords: Tensor, delta: float, radius: float
) -> Tensor:
    """Minimise sum_n huber_delta(o_n + a_n . c) + linear . c over ||c|| <= radius, from coords.

    The objective is piecewise quadratic: Newton steps (curvature from the residuals inside
    (-delta, delta)) land on its minimiser once that set settles. Where too few residuals are
    inside for Newton's system to pin c down, or its step does not descend, the step minimises the
    objective's quadratic majoriser instead (weights 1 / max(|r_n|, delta), reweighted least
    squares). Backtracking keeps every step a descent step; the loop stops when a step lowers the
    objective by less than RELATIVE_TOLERANCE.
    """
    lin = linear.to(F64)
    c = coords.to(F64)

    def value(at: Tensor) -> tuple[float, Tensor]:
        r = torch.addmv(offset, design.T, at.to(design))
        return _huber(r, delta) + float(lin @ at), r

    def search(step: Tensor, current: float, halvings: int):
        for _ in range(halvings):
            trial = c + step
            length = float(trial.norm())
            if length > radius:
                trial = trial * (radius / length)
            new, new_r = value(trial)
            if new <= current:
                return trial, new, new_r
            step = step / 2
        return None

    current, r = value(c)
    for _ in range(MAX_ITERATIONS):
        inside = r.abs() < delta
        grad = (design @ torch.where(inside, r / delta, r.sign())).to(F64) + lin
        found = None
        if int(inside.sum()) >= 2 * design.shape[0]:
            kept = design[:, inside]
            found = search(-_solve_small((kept @ kept.T).to(F64) / delta, grad), current, 4)
        if found is None:
            weights = r.abs().clamp_(min=delta).reciprocal_()
            majoriser = ((design * weights) @ design.T).to(F64)
            found = search(-_solve_small(majoriser, grad), current, 40)
        if found is None:
            break
        improved = _improved(current, found[1])
        c, current, r = found
        if not improved:
            break
    return c


def _lp_step(design: Tensor, offset: Tensor, linear: Tensor, half_width: float) -> Tensor:
    """The exact minimiser of sum_n |o_n + a_n . d| + linear . d over the box |d_j| <= half_width,
    as a linear programme (HiGHS): min sum t + linear . d with -t <= o + A^T d <= t."""
    import scipy.optimize
    import scipy.sparse

    a = scipy.sparse.csr_matrix(design.T.cpu().to(F64).numpy())
    o = offset.cpu().to(F64).numpy()
    n, q = a.shape
    eye = scipy.sparse.identity(n, format="csr")
    result = scipy.optimize.linprog(
        np.concatenate([linear.cpu().numpy(), np.ones(n)]),
        A_ub=scipy.sparse.vstack([scipy.sparse.hstack([a, -eye]), scipy.sparse.hstack([-a, -eye])]),
        b_ub=np.concatenate([-o, o]),
        bounds=[(-half_width, half_width)] * q + [(0, None)] * n,
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"PAS L1 fit: the linear programme failed ({result.message})")
    return torch.from_numpy(result.x[:q]).to(linear)


class _L1Problem:
    """sum_n |o_n + a_n . c| + linear . c over residual elements n, with a_n = scale * design[:, n]
    (design coordinate-major [q, N]); ``linear`` carries the terms of residuals left out as
    sign-fixed. ``scale`` lets the full problem use the caller's basis as it is: scaling the q
    coordinates costs nothing, scaling the q x N design would cost a pass and a copy."""

    def __init__(self, design: Tensor, offset: Tensor, linear: Tensor | None = None,
                 scale: Tensor | None = None):
        self.design = design
        self.offset = offset
        q = design.shape[0]
        self.linear = torch.zeros(q, dtype=F64, device=design.device) if linear is None else linear
        self.scale = torch.ones(q, dtype=F64, device=design.device) if scale is None else scale
        self._lengths: Tensor | None = None

    @property
    def lengths(self) -> Tensor:
        """|a_n| for every residual (computed once, one pass per coordinate)."""
        if self._lengths is None:
            weights = self.scale.square().tolist()
            squares = torch.mul(self.design[0], self.design[0]).mul_(weights[0])
            for row, weight in zip(self.design[1:], weights[1:]):
                squares.addcmul_(row, row, value=weight)
            self._lengths = squares.sqrt_().clamp_(min=torch.finfo(squares.dtype).tiny)
        return self._lengths

    def _part(self, index, offset: Tensor, linear: Tensor | None = None) -> _L1Problem:
        """The problem on the residuals ``index`` selects, its design scaled (so small problems
        need no ``scale``)."""
        design = self.design[:, index] * self.scale.to(self.design)[:, None]
        return _L1Problem(design, offset, linear)

    def subsample(self, count: int) -> _L1Problem:
        stride = max(1, self.offset.numel() // count)
        return self._part(slice(None, None, stride), self.offset[::stride].contiguous())

    def residual(self, coords: Tensor) -> Tensor:
        return torch.addmv(self.offset, self.design.T, (self.scale * coords).to(self.design))

    def huber(self, coords: Tensor, factors: Sequence[float], radius: float = math.inf) -> Tensor:
        """Huber continuation from ``coords``: delta = factor x the mean |residual| there, for each
        factor; the result stays within ``radius`` of the origin (a problem without ``scale``)."""
        scale = max(float(self.residual(coords).abs().mean()), torch.finfo(F64).tiny)
        coords = coords.to(F64)
        for factor in factors:
            coords = _huber_newton(
                self.design, self.offset, self.linear, coords, factor * scale, radius
            )
        return coords

    def near(self, coords: Tensor, count: int, limit: float = math.inf) -> tuple[_L1Problem, float]:
        """The problem in the step d from ``coords``, keeping as they are only the about ``count``
        residuals nearest zero; the radius rho (at most ``limit``) within which that is exact.

        Within ||d|| <= rho a residual with |r_n| > |a_n| rho keeps its sign, so its term is
        linear in d and joins ``linear``.
        """
        r = self.residual(coords)
        if count >= r.numel():
            return self._part(slice(None), r, self.linear.clone()), limit
        ratio = r.abs().div_(self.lengths)
        # The radius that keeps about `count` residuals, estimated on a stride through them.
        stride = max(1, r.numel() // SUBSAMPLE)
        sample = ratio[::stride]
        rank = max(1, min(sample.numel(), count // stride))
        radius = min(limit, float(sample.kthvalue(rank).values))
        keep = ratio <= radius
        kept = r[keep]
        signs = r.sign_().masked_fill_(keep, 0.0)  # r is not needed any more
        linear = self.linear + self.scale * (self.design @ signs).to(F64)
        return self._part(keep, kept, linear), radius


def l1_coords(offset: Tensor, basis: Tensor, dt: float, start: Tensor) -> Tensor:
    """The minimiser of mean |offset + dt * sum_j c_j u_j|.

    Three stages, each on fewer residuals: Huber continuation on a fixed stride through the
    residuals (rough); Huber on the residuals nearest zero within a ball where the rest keep their
    signs and so enter as linear terms (close); a linear programme on the LP_POINTS residuals
    nearest zero within a box inside that ball (exact). A close step on the ball's edge walks on
    and looks again; an LP solution on the box's edge retries with more points; one inside the box
    is the minimiser (convexity).
    """
    design = basis.reshape(basis.shape[0], -1)
    q = design.shape[0]
    # Work in w_j = dt * |u_j| * c_j: the per-sample bases are orthonormal, so the design's Gram
    # matrix is diagonal and this scaling whitens it; a ball in w is then a region of equal loss
    # curvature in every direction, so the radii below fit. (A coordinate no sample uses: 1.)
    norms = torch.linalg.vector_norm(design, dim=1).to(F64)
    scale = 1.0 / norms.where(norms > 0, 1.0)  # the design in w: u_j / |u_j|
    to_coords = scale / dt  # c = to_coords * w
    full = _L1Problem(design, offset.reshape(-1), scale=scale)
    coords = full.subsample(SUBSAMPLE).huber(start.to(F64) / to_coords, (1.0, 1e-1, 1e-2))
    count = int(NEAR_FRACTION * full.offset.numel())
    zero = torch.zeros(q, dtype=F64, device=coords.device)
    for _ in range(MAX_ITERATIONS):
        close, radius = full.near(coords, count)
        step = close.huber(zero, (1e-2, 1e-4), radius)
        room = radius - float(step.norm())
        points = LP_POINTS
        # A step on the ball's edge: the minimiser lies further on; walk there and look again.
        while room > 1e-6 * radius:
            small, reach = close.near(step, points, limit=room)
            half_width = reach / math.sqrt(q)
            exact = _lp_step(small.design, small.offset, small.linear, half_width)
            if float(exact.abs().max()) < (1 - 1e-6) * half_width:
                return (to_coords * (coords + step + exact)).to(start)
            if reach >= room:
                break
            points *= 4
        coords = coords + step
    return (to_coords * coords).to(start)


def pseudo_huber_coords(offset: Tensor, basis: Tensor, dt: float, start: Tensor) -> Tensor:
    """The minimiser of the pseudo-Huber loss, by damped Newton on per-sample quadratics.

    |r_s|^2 = |o_s|^2 + 2 dt c . (U_s o_s) + dt^2 c^T (U_s U_s^T) c, so after one pass over the
    data the loss is a function of S small quadratics in c.
    """
    _samples, dim = offset.shape
    sq = offset.square().sum(dim=1).to(F64)
    proj = torch.einsum("qsd,sd->sq", basis, offset).to(F64) * dt
    inner = torch.einsum("qsd,psd->sqp", basis, basis).to(F64) * dt**2
    c0 = PSEUDO_HUBER_C

    def evaluate(c: Tensor) -> tuple[float, Tensor, Tensor]:
        mc = inner @ c
        norm2 = (sq + 2 * proj @ c + mc @ c).clamp(min=0.0) / dim
        root = (norm2 + c0**2).sqrt()
        grad_n2 = 2 * (proj + mc) / dim  # d norm2 / dc, [S, q]
        grad = (grad_n2 / (2 * root[:, None])).mean(0)
        hess = (
            inner / (dim * root[:, None, None])
            - grad_n2[:, :, None] * grad_n2[:, None, :] / (4 * root[:, None, None] ** 3)
        ).mean(0)
        return float((root - c0).mean()), grad, hess

    coords = start.to(F64)
    current, grad, hess = evaluate(coords)
    for _ in range(MAX_ITERATIONS):
        step = -torch.linalg.lstsq(hess, grad[:, None], driver="gelsd").solution[:, 0]
        for _ in range(30):
            value, new_grad, new_hess = evaluate(coords + step)
            if value < current:
                break
            step = step / 2
        if not value < current:
            break
        coords, improved = coords + step, _improved(current, value)
        current, grad, hess = value, new_grad, new_hess
        if not improved:
            break
    return coords.to(start)


def fit_coords(
    offset: Tensor, basis: Tensor, dt: float, start: Tensor, settings: FitSettings
) -> tuple[Tensor, int]:
    """The fitted coordinates of one step and the Adam epochs spent (0 for the exact fits).

    offset [S, D] is x - target, basis [q, S, D] (coordinate-major), start the reference start.
    """
    if settings.loss == "L2":
        return least_squares_coords(offset, basis, dt), 0
    if settings.optimizer == "adam":
        return adam_coords(offset, basis, dt, start, settings)
    if settings.loss == "L1":
        return l1_coords(offset, basis, dt, start), 0
    return pseudo_huber_coords(offset, basis, dt, start), 0
