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

The data of a step come as :class:`StepData`: chunks of samples (pas.stream reads them from a
memory-mapped scratch file; ``Resident`` slices tensors). Every optimiser sees them one chunk at
a time: L2 and pseudo-Huber reduce them to small sums in one pass, L1 takes a pass per close fit
and keeps at most ``NEAR_CAP`` residuals in memory, Adam takes a pass per epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

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
# ...but the close fit never keeps more than about this many (memory: ~(q+2) x 8 bytes each).
NEAR_CAP = 1 << 21
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


class StepData(Protocol):
    """One step's fitting data, ``samples`` x ``dim`` residual elements in chunks of samples."""

    samples: int
    dim: int
    # True when every chunk's tensors may stay in memory across passes (Adam's epochs).
    resident: bool

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """(offset x - target [c, D], basis [q, c, D] coordinate-major) per chunk, in order."""
        ...


@dataclass(frozen=True)
class Resident:
    """StepData held in memory: offset [S, D] and basis [q, S, D], handed out ``chunk`` samples
    at a time (all at once by default)."""

    offset: Tensor
    basis: Tensor
    chunk: int | None = None
    resident = True

    @property
    def samples(self) -> int:
        return self.offset.shape[0]

    @property
    def dim(self) -> int:
        return self.offset[0].numel()

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        size = self.chunk or self.samples
        for start in range(0, self.samples, size):
            part = slice(start, start + size)
            yield self.offset[part].reshape(-1, self.dim), self.basis[:, part]


def least_squares_coords(data: StepData, dt: float) -> Tensor:
    """The exact L2 minimiser of mean ||offset + dt * sum_j c_j u_j||^2 over shared c.

    The normal equations are (sum_s U_s U_s^T) c = -(sum_s U_s offset_s) / dt, summed over the
    chunks and solved in float64 (least-squares solve, so a coordinate no sample uses gets 0
    instead of a singular system).
    """
    gram = rhs = 0.0
    for offset, basis in data.chunks():
        flat = basis.reshape(basis.shape[0], -1)
        gram = gram + (flat @ flat.T).to(F64)
        rhs = rhs - (flat @ offset.reshape(-1)).to(F64) / dt
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


class _ChunkedObjective:
    """The Objective of all chunks: their values and gradients averaged with weights c / S (each
    chunk's loss is a mean over its c samples). Resident data (held in memory, or streamed in one
    chunk) keep one Objective per chunk and its buffers; streamed chunks are built anew each
    epoch."""

    def __init__(self, name: str, data: StepData, dt: float):
        self.name, self.data, self.dt = name, data, dt
        self.kept = (
            [Objective(name, o, b, dt) for o, b in data.chunks()]
            if data.resident else None
        )

    def __call__(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        parts = self.kept or (Objective(self.name, o, b, self.dt) for o, b in self.data.chunks())
        value = grad = 0.0
        for part in parts:
            weight = part.samples / self.data.samples
            v, g = part(coords)
            value, grad = value + weight * v, grad + weight * g
        return value, grad


def adam_coords(
    data: StepData, dt: float, start: Tensor, settings: FitSettings
) -> tuple[Tensor, int]:
    """Full-batch Adam on L1 or pseudo-Huber: one step per epoch over all samples (a pass over
    the chunks). Returns the coordinates after the last step and the number of epochs run.
    """
    objective = _ChunkedObjective(settings.loss, data, dt)
    coords = start.clone()
    optimiser = torch.optim.Adam([coords], lr=settings.lr)
    history: list[float] = []
    for _ in range(settings.epochs):
        value, coords.grad = objective(coords)
        optimiser.step()
        history.append(float(value))
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
    """sum_n |o_n + a_n . c| + linear . c over residual elements n held in memory (design
    coordinate-major [q, N]); ``linear`` carries the terms of residuals left out as sign-fixed."""

    def __init__(self, design: Tensor, offset: Tensor, linear: Tensor | None = None):
        self.design = design
        self.offset = offset
        q = design.shape[0]
        self.linear = torch.zeros(q, dtype=F64, device=design.device) if linear is None else linear

    @property
    def lengths(self) -> Tensor:
        """|a_n| for every residual."""
        return _lengths(self.design)

    def residual(self, coords: Tensor) -> Tensor:
        return torch.addmv(self.offset, self.design.T, coords.to(self.design))

    def huber(self, coords: Tensor, factors: Sequence[float], radius: float = math.inf) -> Tensor:
        """Huber continuation from ``coords``: delta = factor x the mean |residual| there, for each
        factor; the result stays within ``radius`` of the origin."""
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
            return _L1Problem(self.design, r, self.linear.clone()), limit
        ratio = r.abs().div_(self.lengths)
        radius = min(limit, float(ratio.kthvalue(max(1, count)).values))
        keep = ratio <= radius
        kept = r[keep]
        signs = r.sign_().masked_fill_(keep, 0.0)  # r is not needed any more
        linear = self.linear + (self.design @ signs).to(F64)
        return _L1Problem(self.design[:, keep], kept, linear), radius


def _lengths(design: Tensor) -> Tensor:
    """|a_n| of every column of a design [q, N] (one pass per coordinate, no q x N temporary)."""
    squares = torch.mul(design[0], design[0])
    for row in design[1:]:
        squares.addcmul_(row, row)
    return squares.sqrt_().clamp_(min=torch.finfo(squares.dtype).tiny)


class _StreamedL1:
    """sum_n |o_n + a_n . w| over every residual element of ``data``, with a_n = scale * u_n
    (``scale`` whitens the design, see l1_coords): never in memory at once, only passed over.

    The elements are numbered sample-major (n = s D + e) whatever the chunks, and the rough fit
    sees every ``stride``-th of them, so its problem does not depend on the chunk size.
    """

    def __init__(self, data: StepData):
        self.data = data
        self.stride = max(1, data.samples * data.dim // SUBSAMPLE)
        squares, designs, offsets, start = 0.0, [], [], 0
        for offset, basis in data.chunks():
            design = basis.reshape(basis.shape[0], -1)
            squares = squares + torch.linalg.vector_norm(design, dim=1).to(F64).square()
            first = -start % self.stride
            designs.append(design[:, first :: self.stride])
            offsets.append(offset.reshape(-1)[first :: self.stride])
            start += design.shape[1]
        norms = squares.sqrt()
        # A coordinate no sample uses keeps scale 1.
        self.scale = 1.0 / norms.where(norms > 0, 1.0)
        self.sample = _L1Problem(
            torch.cat(designs, dim=1) * self.scale.to(designs[0])[:, None], torch.cat(offsets)
        )

    def near(self, coords: Tensor, count: int) -> tuple[_L1Problem, float]:
        """As _L1Problem.near, in one pass: the radius comes from the rough fit's stride through
        the residuals; a chunk whose kept residuals would take the total past 2 ``count`` lowers
        it (and turns the residuals beyond it into linear terms), so at most ~2 ``count`` are kept.
        """
        ratio = self.sample.residual(coords).abs_().div_(self.sample.lengths)
        rank = max(1, min(ratio.numel(), count // self.stride))
        radius = float(ratio.kthvalue(rank).values)
        weights = self.scale * coords
        linear = torch.zeros_like(coords, dtype=F64)
        designs, residuals, ratios = [], [], []
        for offset, basis in self.data.chunks():
            design = basis.reshape(basis.shape[0], -1)
            r = torch.addmv(offset.reshape(-1), design.T, weights.to(design))
            design = design * self.scale.to(design)[:, None]
            chunk_ratio = r.abs().div_(_lengths(design))
            keep = chunk_ratio <= radius
            designs.append(design[:, keep])
            residuals.append(r[keep])
            ratios.append(chunk_ratio[keep])
            linear += (design @ r.sign_().masked_fill_(keep, 0.0)).to(F64)
            if sum(len(part) for part in ratios) > 2 * count:
                radius, linear = _trim(designs, residuals, ratios, count, linear)
        return _L1Problem(torch.cat(designs, dim=1), torch.cat(residuals), linear), radius


def _trim(designs: list[Tensor], residuals: list[Tensor], ratios: list[Tensor], count: int,
          linear: Tensor) -> tuple[float, Tensor]:
    """Keep only the ``count`` residuals of smallest ratio |r_n| / |a_n| (in place in the lists);
    the others join ``linear`` as sign-fixed terms. Returns the new radius and linear terms."""
    design, residual, ratio = torch.cat(designs, dim=1), torch.cat(residuals), torch.cat(ratios)
    radius = float(ratio.kthvalue(count).values)
    keep = ratio <= radius
    linear = linear + (design @ residual.sign().masked_fill_(keep, 0.0)).to(F64)
    designs[:] = [design[:, keep]]
    residuals[:] = [residual[keep]]
    ratios[:] = [ratio[keep]]
    return radius, linear


def l1_coords(data: StepData, dt: float, start: Tensor) -> Tensor:
    """The minimiser of mean |offset + dt * sum_j c_j u_j|.

    Three stages, each on fewer residuals: Huber continuation on a fixed stride through the
    residuals (rough); Huber on the residuals nearest zero within a ball where the rest keep their
    signs and so enter as linear terms (close); a linear programme on the LP_POINTS residuals
    nearest zero within a box inside that ball (exact). A close step on the ball's edge walks on
    and looks again; an LP solution on the box's edge retries with more points; one inside the box
    is the minimiser (convexity). Only the close stage passes over all residuals, one pass each.
    """
    # Work in w_j = dt * |u_j| * c_j: the per-sample bases are orthonormal, so the design's Gram
    # matrix is diagonal and this scaling whitens it; a ball in w is then a region of equal loss
    # curvature in every direction, so the radii below fit.
    full = _StreamedL1(data)
    q = full.scale.numel()
    to_coords = full.scale / dt  # c = to_coords * w
    coords = full.sample.huber(start.to(F64) / to_coords, (1.0, 1e-1, 1e-2))
    count = max(1, min(int(NEAR_FRACTION * data.samples * data.dim), NEAR_CAP))
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


def pseudo_huber_coords(data: StepData, dt: float, start: Tensor) -> Tensor:
    """The minimiser of the pseudo-Huber loss, by damped Newton on per-sample quadratics.

    |r_s|^2 = |o_s|^2 + 2 dt c . (U_s o_s) + dt^2 c^T (U_s U_s^T) c, so after one pass over the
    data the loss is a function of S small quadratics in c.
    """
    dim = data.dim
    parts = [
        (offset.square().sum(dim=1).to(F64), torch.einsum("qsd,sd->sq", basis, offset).to(F64),
         torch.einsum("qsd,psd->sqp", basis, basis).to(F64))
        for offset, basis in data.chunks()
    ]
    sq, proj, inner = (torch.cat(column) for column in zip(*parts))
    proj, inner = proj * dt, inner * dt**2
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
    data: StepData, dt: float, start: Tensor, settings: FitSettings
) -> tuple[Tensor, int]:
    """The fitted coordinates of one step and the Adam epochs spent (0 for the exact fits).

    ``data`` holds the offsets x - target and the bases, ``start`` is the reference start.
    """
    if settings.loss == "L2":
        return least_squares_coords(data, dt), 0
    if settings.optimizer == "adam":
        return adam_coords(data, dt, start, settings)
    if settings.loss == "L1":
        return l1_coords(data, dt, start), 0
    return pseudo_huber_coords(data, dt, start), 0
