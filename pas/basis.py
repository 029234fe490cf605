"""The per-sample PAS basis (pas-spec §3 with decisions 0.2-0.4).

For every sample, ``u_1 = d/||d||`` and ``u_2..u_k`` are the leading principal directions of the
centred buffer ``[x_T?, used..., d]``, Gram-Schmidt-orthogonalised against the earlier ones and
oriented by the sign rule. The PCA is exact: an eigendecomposition of the small m x m Gram matrix
of the centred rows, computed per sample.

Every basis vector lies in the span of the buffer rows, so the whole construction runs on m x m
float64 matrices: the basis is a coefficient matrix C [k, m] per sample (``U = C @ rows``), and only
the Gram matrix, two m-vectors of inner products and the final combination touch the D-dimensional
rows. ``BasisTracker`` keeps float64 copies of a trajectory's rows and grows their Gram matrix by
one or two rows per step, so a step costs O(m D) instead of O(m^2 D).

A step's basis is handed out as :class:`Basis`: the vectors coordinate-major ([k, B, D], so the
coordinate fit reads each coordinate's block in one stride) in the data's dtype, and the number
of leading coordinates the data support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from solvers.context import StepContext

F64 = torch.float64
# BasisTracker works through a batch in chunks of about this many bytes of float64 rows (bounds
# the temporaries; smaller chunks multiply the per-chunk overhead of the small m x m algebra).
_CHUNK_BYTES = 1 << 26


def relative_floor(dtype: torch.dtype, m: int) -> float:
    """Smallest singular value, relative to the largest, that counts as a real direction.

    Two error sources bound what is resolvable: the data themselves carry relative errors of
    ~eps(dtype), and the Gram eigenvalues (computed in float64) carry absolute errors of
    ~m eps64 lambda_max, i.e. sigma_k/sigma_max below sqrt(m eps64) is unresolvable. The factor 100
    leaves margin for the rounding of the buffer rows, the centring and the Gram products. A
    direction below this floor is rounding noise, not data (decision 0.3), and is dropped.
    """
    from_data = 100 * m * torch.finfo(dtype).eps
    from_gram = (100 * m * torch.finfo(F64).eps) ** 0.5
    return max(from_data, from_gram)


def _metric_dot(a: Tensor, gram: Tensor, b: Tensor) -> Tensor:
    """<A^T a, A^T b> = a^T G b for coefficient vectors a, b [n, m] and Gram matrices G [n, m, m]."""
    return (a * (gram @ b[..., None])[..., 0]).sum(-1)


def _principal_coefficients(gram: Tensor, q: int, floor: float) -> tuple[Tensor, Tensor]:
    """Coefficients [n, q, m] of the top-q unit principal directions of the centred rows, and
    which of them are real (above the noise floor).

    With J the centring matrix, the centred rows are J A, their Gram matrix is J G J, and an
    eigenvector w (eigenvalue lam) of it gives the unit direction A^T J w / sqrt(lam) = A^T w /
    sqrt(lam), since w is orthogonal to the all-ones vector.
    """
    m = gram.shape[-1]
    centring = torch.eye(m, dtype=F64, device=gram.device) - 1.0 / m
    evals, evecs = torch.linalg.eigh(centring @ gram @ centring)
    evals, evecs = evals.flip(-1)[:, :q], evecs.flip(-1)[:, :, :q]
    lam_max = evals[:, :1].clamp(min=0.0)
    real = (evals > lam_max * floor**2) & (lam_max > 0)
    scale = torch.where(real, evals.clamp(min=torch.finfo(F64).tiny).rsqrt(), 0.0)
    return (evecs * scale[:, None, :]).transpose(1, 2), real


def _orthonormalise(gram: Tensor, first: Tensor, others: Tensor, real: Tensor, floor: float):
    """Gram-Schmidt of [first, others...] in the metric G -> [n, 1+q, m]; a dependent or unreal
    vector becomes a zero row.

    Classical Gram-Schmidt, run twice per vector ("twice is enough"): identical in exact arithmetic,
    and it keeps the rows orthonormal to rounding even when a direction is close to d.
    """
    basis = [first]
    for j in range(others.shape[1]):
        v = others[:, j]
        for _ in range(2):
            v = v - sum(_metric_dot(u, gram, v)[:, None] * u for u in basis)
        norm = _metric_dot(v, gram, v).clamp(min=0.0).sqrt()[:, None]
        keep = real[:, j : j + 1] & (norm > floor)
        basis.append(torch.where(keep, v / norm.where(norm > 0, 1.0), 0.0))
    return torch.stack(basis, dim=1)


def basis_coefficients(
    gram: Tensor, progress: Tensor, start: Tensor, k: int, floor: float
) -> Tensor:
    """The basis as coefficients [n, k, m] over each sample's m rows (the last row is d).

    ``gram`` [n, m, m] holds the rows' inner products, ``progress`` [n, m] their inner products with
    x_i - x_0 and ``start`` [n, m] those with x_0 (the sign rule's inputs, decision 0.4). Rows the
    data do not support are zero.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, m = gram.shape[:2]
    d_norm = gram[:, -1, -1].clamp(min=0.0).sqrt()
    first = torch.zeros(n, m, dtype=F64, device=gram.device)
    first[:, -1] = 1.0 / d_norm.where(d_norm > 0, 1.0)
    q = min(k - 1, m)
    if q == 0:
        return first[:, None]
    others, real = _principal_coefficients(gram, q, floor)
    coef = _orthonormalise(gram, first, others, real, floor)
    # Sign rule for u_2..: <u, x_i - x_0> > 0, else <u, x_0> > 0 where the first product is 0.
    along = (coef[:, 1:] * progress[:, None]).sum(-1)
    fallback = (coef[:, 1:] * start[:, None]).sum(-1)
    sign = torch.where(torch.where(along == 0, fallback, along) < 0, -1.0, 1.0)
    coef = torch.cat([coef[:, :1], coef[:, 1:] * sign[..., None]], dim=1)
    missing = k - coef.shape[1]
    return torch.nn.functional.pad(coef, (0, 0, 0, missing)) if missing else coef


def _flat64(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).to(F64)


@dataclass(frozen=True)
class Basis:
    """The PAS basis of one step for a batch of B samples.

    ``vectors`` [k, B, D] holds u_{s,j} at [j, s] (zero where the data do not support a j-th
    direction); ``size`` is how many leading coordinates any sample supports.
    """

    vectors: Tensor
    size: int

    def combine(self, coords: Tensor, like: Tensor) -> Tensor:
        """sum_j c_j u_j over the first len(coords) vectors, shaped like ``like``."""
        q = coords.shape[0]
        mixed = coords.to(self.vectors) @ self.vectors[:q].reshape(q, -1)
        return mixed.reshape(like.shape).to(like.dtype)


def _orthonormal_vectors(coef: Tensor, rows: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """The basis vectors U = coef @ rows [n, k, D] (float64), re-orthonormalised in D-space, and
    which of them are non-zero [n, k].

    The coefficients come from inner products of rows of very different sizes (x_T is ~t_0 times
    larger than a direction), so U's rows are orthonormal only to ~1e-7, and a row can be
    dependent on the earlier ones in D-space although the Gram matrix did not resolve it (more
    rows than dimensions, as for 2-D data). Gram-Schmidt on U's own k x k overlap matrix
    (computed in D-space, so accurate) fixes both: a row left with less than ``floor`` of its
    length is dropped (zero), the others keep their direction up to rounding and their sign.
    """
    basis = coef @ rows
    overlap = basis @ basis.transpose(1, 2)
    n, k = overlap.shape[:2]
    eye = torch.eye(k, dtype=F64, device=overlap.device).expand(n, k, k)
    # Row j of `mix` holds the coefficients of q_j over U's rows: Q = mix @ U.
    mix = torch.zeros_like(overlap)
    kept = torch.zeros(n, k, dtype=torch.bool, device=overlap.device)
    for j in range(k):
        t = eye[:, j]
        for _ in range(2):
            along = mix @ (overlap @ t[..., None])  # <q_i, t> for every earlier q_i
            t = t - (along.transpose(1, 2) @ mix)[:, 0]
        norm = _metric_dot(t, overlap, t).clamp(min=0.0).sqrt()
        kept[:, j] = norm > floor * overlap[:, j, j].clamp(min=0.0).sqrt()
        mix[:, j] = torch.where(kept[:, j, None], t / norm.where(kept[:, j], 1.0)[:, None], 0.0)
    return mix @ basis, kept


def _size(kept: Tensor) -> int:
    """1 + the last basis row that any sample keeps (at least 1)."""
    used = kept.any(dim=0)
    return int(used.nonzero().max()) + 1 if used.any() else 1


def build_basis(
    x_cur: Tensor, direction: Tensor, buffer: Sequence[Tensor], x_T: Tensor, k: int
) -> Basis:
    """The orthonormal PAS basis of a batch, vectors in x_cur's dtype.

    ``buffer`` is the ordered list of earlier vectors (x_T when use_xT, then the directions used),
    each shaped like x_cur. Vector j of a sample is zero where the data do not support a j-th
    direction (a principal direction at rounding level, or one that Gram-Schmidt finds dependent
    on the earlier rows). This is the stateless form of what ``BasisTracker`` computes step by step.
    """
    rows = torch.stack([_flat64(t) for t in (*buffer, direction)], dim=1)
    x_T64 = _flat64(x_T)
    gram = rows @ rows.transpose(1, 2)
    progress = (rows @ (_flat64(x_cur) - x_T64)[..., None])[..., 0]
    start = (rows @ x_T64[..., None])[..., 0]
    floor = relative_floor(x_cur.dtype, rows.shape[1])
    coef = basis_coefficients(gram, progress, start, k, floor)
    vectors, kept = _orthonormal_vectors(coef, rows, floor)
    return Basis(vectors.transpose(0, 1).to(x_cur.dtype), _size(kept))


class BasisTracker:
    """The PAS basis of each step of one batch of trajectories (buffer rule 0.1).

    Holds float64 copies of the rows ``x_T, used_0, used_1, ...`` of the trajectory batch being
    solved and their Gram matrix, adding only the rows that are new since the last call. A call
    for step 0, or with another ``x_T`` tensor, starts a new batch. Steps a caller skips (sampling
    calls it only at corrected steps) are caught up at the next call.
    """

    def __init__(self, k: int, use_xT: bool):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.use_xT = use_xT
        self._x_T: Tensor | None = None
        self._rows = self._gram = self._vectors = torch.empty(0)
        self._stored: list[Tensor] = []  # the tensor behind each filled slot (identity checks)

    def _start(self, ctx: StepContext) -> None:
        # x_T, up to num_steps - 1 used directions, d, and one slot for x_cur - x_T.
        batch, slots = ctx.x_T.shape[0], ctx.num_steps + 2
        shape = (batch, slots, ctx.x_T[0].numel())
        # A batch like the last one reuses its buffers: fresh ones of this size would be paged in
        # again, which costs about as much as filling them.
        if self._rows.shape != shape or self._rows.device != ctx.x_T.device:
            # Let the old buffers go first, so two chunks' rows are never live together.
            self._rows = self._gram = torch.empty(0)
            self._rows = torch.empty(shape, dtype=F64, device=ctx.x_T.device)
            self._gram = torch.empty(batch, slots, slots, dtype=F64, device=ctx.x_T.device)
        vectors = (self.k, batch, shape[2])
        if (self._vectors.shape != vectors or self._vectors.dtype != ctx.x_cur.dtype
                or self._vectors.device != ctx.x_T.device):
            self._vectors = torch.empty(0)
            self._vectors = torch.empty(vectors, dtype=ctx.x_cur.dtype, device=ctx.x_T.device)
        self._x_T = ctx.x_T
        self._stored = []

    def _first_new(self, ctx: StepContext) -> int:
        """The first slot to (re)write so the slots hold [x_T, *ctx.used, ctx.direction]; every
        slot from it to the end of the buffer is new."""
        if ctx.index == 0 or ctx.x_T is not self._x_T or ctx.num_steps + 2 != self._rows.shape[1]:
            self._start(ctx)
        wanted = (ctx.x_T, *ctx.used, ctx.direction)
        first = next(
            (slot for slot, row in enumerate(wanted)
             if slot >= len(self._stored) or self._stored[slot] is not row),
            len(wanted),
        )
        self._stored = list(wanted)
        return first

    def resume(self, ctx: StepContext, gram: Tensor | None = None, known: int = 0) -> None:
        """Take up a batch part-way: its first ``known`` rows [x_T, *ctx.used][:known] were seen
        at earlier steps, so the next ``basis(ctx)`` computes only the products of the rows
        after them (pas.stream keeps the products between the steps of a chunk of trajectories).

        ``gram`` [B, known, known] holds their inner products (``known_gram``); without it the
        tracker's last call was on the same trajectories and still holds their rows and products
        (then only the tensors behind them are new).
        """
        stored = [ctx.x_T, *ctx.used][:known]
        if gram is None:
            self._x_T, self._stored = ctx.x_T, stored
            return
        self._start(ctx)
        self._stored = stored
        batch = ctx.x_T.shape[0]
        for slot, row in enumerate(stored):
            self._rows[:, slot].copy_(row.reshape(batch, -1))
        self._gram[:, :known, :known] = gram

    def known_gram(self, n: int) -> Tensor:
        """The inner products of the first n rows seen so far [B, n, n] (n <= the rows the last
        ``basis`` call saw; a view of the tracker's buffer)."""
        return self._gram[:, :n, :n]

    def _chunks(self) -> list[slice]:
        """Sample ranges whose float64 rows take about _CHUNK_BYTES."""
        batch, slots, dim = self._rows.shape
        size = max(1, _CHUNK_BYTES // (slots * dim * 8))
        return [slice(start, start + size) for start in range(0, batch, size)]

    def _chunk_basis(self, part: slice, new: int, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Write the rows of samples ``part`` from slot ``new`` on and their inner products (one
        pass over the rows, which also gives the sign rule's products with x_cur - x_T), then
        build their basis: vectors [n, k, D] float64 and which are non-zero."""
        rows, gram = self._rows[part], self._gram[part]
        n, count = rows.shape[0], len(self._stored)
        for slot in range(new, count):
            rows[:, slot].copy_(self._stored[slot][part].reshape(n, -1))
        # x_cur - x_T goes to the slot after the buffer (the next step's row overwrites it), so the
        # new rows and it are one contiguous block whose inner products take one pass.
        rows[:, count].copy_(ctx.x_cur[part].reshape(n, -1)).sub_(rows[:, 0])
        dots = rows[:, : count + 1] @ rows[:, new : count + 1].transpose(1, 2)
        gram[:, : count + 1, new : count + 1] = dots
        gram[:, new : count + 1, : count + 1] = dots.transpose(1, 2)
        first = 0 if self.use_xT else 1
        floor = relative_floor(ctx.x_cur.dtype, count - first)
        coef = basis_coefficients(
            gram[:, first:count, first:count], gram[:, first:count, count], gram[:, first:count, 0],
            self.k, floor,
        )
        return _orthonormal_vectors(coef, rows[:, first:count], floor)

    def basis(self, ctx: StepContext) -> Basis:
        """The basis of step ``ctx``, vectors in ``ctx.x_cur``'s dtype.

        The vectors live in a buffer of the tracker: they are valid until its next call.
        """
        new = self._first_new(ctx)
        kept = torch.empty(self._rows.shape[0], self.k, dtype=torch.bool, device=self._rows.device)
        for part in self._chunks():
            chunk, kept[part] = self._chunk_basis(part, new, ctx)
            self._vectors[:, part] = chunk.transpose(0, 1)
        return Basis(self._vectors, _size(kept))

    def corrected(self, ctx: StepContext, coords: Tensor) -> Tensor:
        """The corrected direction sum_j c_j u_j of step ``ctx``, shaped like ``ctx.direction``.

        ``coords`` may be shorter than k: the first len(coords) basis vectors are used.
        """
        return self.basis(ctx).combine(coords, ctx.direction)
