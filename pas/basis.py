"""The per-sample PAS basis (pas-spec §3 with decisions 0.2-0.4).

For every sample, ``u_1 = d/||d||`` and ``u_2..u_k`` are the leading principal directions of the
centred buffer ``[x_T?, used..., d]``, Gram-Schmidt-orthogonalised against the earlier ones and
oriented by the sign rule. The PCA is exact: an eigendecomposition of the small m x m Gram matrix
of the centred rows, computed per sample, so a sample's basis never depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from solvers.context import StepContext

# Float64 elements of buffer rows (samples x m x features) worked on at once.
_CHUNK_ELEMENTS = 1 << 22


def relative_floor(dtype: torch.dtype, m: int) -> float:
    """Smallest singular value, relative to the largest, that counts as a real direction.

    Two error sources bound what is resolvable: the data themselves carry relative errors of
    ~eps(dtype), and the Gram eigenvalues (computed in float64) carry absolute errors of
    ~m eps64 lambda_max, i.e. sigma_k/sigma_max below sqrt(m eps64) is unresolvable. The factor 100
    leaves margin for the rounding of the buffer rows, the centring and the Gram products. A
    direction below this floor is rounding noise, not data (decision 0.3), and is dropped.
    """
    from_data = 100 * m * torch.finfo(dtype).eps
    from_gram = (100 * m * torch.finfo(torch.float64).eps) ** 0.5
    return max(from_data, from_gram)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise inner products over the last axis (a plain reduction: same result in any batch)."""
    return (a * b).sum(-1)


def _principal_directions(rows: Tensor, q: int, floor: float) -> tuple[Tensor, Tensor]:
    """Top-q principal directions [b, q, D] of each sample's rows [b, m, D], and which are real."""
    centred = rows - rows.mean(dim=1, keepdim=True)
    # Batched matrix products handle each sample's matrices separately (tested batch-invariant).
    gram = centred @ centred.transpose(1, 2)
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(-1)[:, :q], evecs.flip(-1)[:, :, :q]
    lam_max = evals[:, :1].clamp(min=0.0)
    real = (evals > lam_max * floor**2) & (lam_max > 0)
    dirs = evecs.transpose(1, 2) @ centred
    norms = dirs.norm(dim=-1, keepdim=True)
    dirs = torch.where(real[..., None], dirs / norms.where(norms > 0, 1.0), 0.0)
    return dirs, real


def _orthonormalise(first: Tensor, others: Tensor, real: Tensor, floor: float) -> Tensor:
    """Gram-Schmidt of [first, others...] -> [b, 1+q, D]; a dependent or unreal vector -> zero row.

    Classical Gram-Schmidt, run twice per vector ("twice is enough"): identical in exact arithmetic,
    and it keeps the rows orthonormal to rounding even when a direction is close to d.
    """
    basis = [first]
    for j in range(others.shape[1]):
        v = others[:, j]
        for _ in range(2):
            v = v - sum(_dot(u, v)[:, None] * u for u in basis)
        norm = v.norm(dim=-1, keepdim=True)
        keep = real[:, j : j + 1] & (norm > floor)
        basis.append(torch.where(keep, v / norm.where(norm > 0, 1.0), 0.0))
    return torch.stack(basis, dim=1)


def _orient(basis: Tensor, x_cur: Tensor, x_T: Tensor) -> Tensor:
    """Sign rule (decision 0.4) for u_2..: <u, x_i - x_0> > 0, else <u, x_0> > 0 where that is 0."""
    progress = _dot(basis[:, 1:], (x_cur - x_T)[:, None])
    start = _dot(basis[:, 1:], x_T[:, None])
    sign = torch.where(torch.where(progress == 0, start, progress) < 0, -1.0, 1.0)
    return torch.cat([basis[:, :1], basis[:, 1:] * sign[..., None]], dim=1)


def _basis_chunk(
    x_cur: Tensor, direction: Tensor, buffer: Sequence[Tensor], x_T: Tensor, k: int, floor: float
) -> Tensor:
    """``build_basis`` for one chunk of flattened float64 rows."""
    d_norm = direction.norm(dim=-1, keepdim=True)
    u1 = direction / d_norm.where(d_norm > 0, 1.0)
    q = min(k - 1, len(buffer) + 1)
    if q == 0:
        return u1[:, None]
    rows = torch.stack([*buffer, direction], dim=1)
    dirs, real = _principal_directions(rows, q, floor)
    basis = _orient(_orthonormalise(u1, dirs, real, floor), x_cur, x_T)
    missing = k - basis.shape[1]
    return torch.nn.functional.pad(basis, (0, 0, 0, missing)) if missing else basis


def build_basis(
    x_cur: Tensor, direction: Tensor, buffer: Sequence[Tensor], x_T: Tensor, k: int
) -> Tensor:
    """The orthonormal PAS basis U [B, k, D] (D = flattened sample size), in x_cur's dtype.

    ``buffer`` is the ordered list of earlier vectors (x_T when use_xT, then the directions used),
    each shaped like x_cur. Row j of U is the j-th basis vector of each sample, or zero where the
    data do not support a j-th direction (a principal direction at rounding level, or one that
    Gram-Schmidt finds dependent on the earlier rows).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch = x_cur.shape[0]
    m = len(buffer) + 1
    floor = relative_floor(x_cur.dtype, m)
    flat = [t.reshape(batch, -1) for t in (x_cur, direction, x_T, *buffer)]
    chunk = max(1, _CHUNK_ELEMENTS // (m * flat[0].shape[1]))
    parts = []
    for start in range(0, batch, chunk):
        x, d, xt, *buf = (t[start : start + chunk].to(torch.float64) for t in flat)
        parts.append(_basis_chunk(x, d, buf, xt, k, floor))
    return torch.cat(parts).to(x_cur.dtype)


def n_coords(basis: Tensor) -> int:
    """How many leading coordinates the data support: 1 + the last row non-zero for any sample."""
    used = basis.abs().amax(dim=(0, 2)) > 0
    return int(used.nonzero().max()) + 1 if used.any() else 1


def combine(basis: Tensor, coords: Tensor, like: Tensor) -> Tensor:
    """The corrected direction sum_j c_j u_j, shaped like ``like``.

    An explicit sum over j (not a matrix product): a sample gets the same result in any batch.
    """
    q = coords.shape[0]
    out = (basis[:, :q] * coords.to(basis)[None, :, None]).sum(dim=1)
    return out.reshape(like.shape).to(like.dtype)


def step_basis(ctx: StepContext, k: int, use_xT: bool) -> Tensor:
    """The basis of a solver step; buffer = [x_T if use_xT, then the directions used] (0.1)."""
    buffer = [ctx.x_T, *ctx.used] if use_xT else list(ctx.used)
    return build_basis(ctx.x_cur, ctx.direction, buffer, ctx.x_T, k)
