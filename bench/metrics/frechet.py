"""Streaming sample-quality metrics: Frechet distance (FD in data space, FID in Inception space).

Nothing is kept per sample: an accumulator holds a count, the sum of the feature vectors and the
sum of their outer products, all in float64. Sums can be added across batches, ranks and machines,
so the result does not depend on how the samples were split (up to float64 rounding).

Error bars: the moments are kept per seed block (seed n in block n mod K, so the blocks are the same
in every cell, batch size, rank and shard) and the full moments are their sum. The value of the
metric with block k left out is taken to first order around the full sample: the mean and trace
terms of FD exactly, the trace of the matrix square root through its derivative (see
:func:`leave_one_out_first_order`). That costs one set of eigenvectors per cell (float32, beside
the distance's own float64 eigenvalues) however many blocks there are, where recomputing FD without
each block costs one eigenvalue problem per block (10 x 1.2 s at 3072 dimensions on 2 cores). The
first-order values miss a curvature term that is nearly the same for every block, so their
jackknife spread, the standard error of the full-sample value (:func:`jackknife_se`), agrees with
the exact leave-one-block-out one (tests/test_block_errors.py checks both against each other and
against repeated seed sets).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Features = Callable[[Tensor], Tensor]
# Samples a Frechet metric needs at the least: its covariance has ddof=1. bench.plan checks every
# cell against this before anything runs.
MIN_SAMPLES = 2
# Seed blocks per cell for the standard error (``--blocks``, grid key ``blocks``); 1 = no error bars.
DEFAULT_BLOCKS = 10
# A seed block gathers at least this many rows before they join its outer-product sum: one
# product per batch and block would rewrite the whole D x D sum for a few rows (memory-bound).
FLUSH_ROWS = 512


def flatten_features(samples: Tensor) -> Tensor:
    """The identity feature map of FD in data space: each sample as one flat vector."""
    return samples.reshape(samples.shape[0], -1)


def _as_double(array: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(array, dtype=torch.float64).cpu()


def _column_blocks(size: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive (start, stop) ranges covering range(size)."""
    return list(itertools.pairwise(size * part // parts for part in range(parts + 1)))


# torch has neither a triangular nor a symmetric matrix product (BLAS trmm, syrk); the helpers
# below skip the zero or mirrored blocks by hand. At 3072 dimensions on 2 cores: cov @ R 0.82 s
# against 1.17 s (float64, 4 blocks); 5,000 outer products 0.56 s against 0.90 s (float64, 8
# blocks).


def _times_triangular(matrix: Tensor, triangle: Tensor, lower: bool) -> Tensor:
    """matrix @ triangle for a lower or upper triangular ``triangle``, without its zero blocks:
    column block [a, b) of the product needs only rows a.. (lower) or ..b (upper)."""
    out = torch.empty(matrix.shape[0], triangle.shape[1], dtype=matrix.dtype, device=matrix.device)
    for start, stop in _column_blocks(triangle.shape[0], 4):
        rows = slice(start, None) if lower else slice(None, stop)
        torch.mm(matrix[:, rows], triangle[rows, start:stop], out=out[:, start:stop])
    return out


def _add_upper_gram(out: Tensor, rows: Tensor, blocks: list[tuple[int, int]]) -> None:
    """out += rows^T rows on and above the diagonal ``blocks`` only (see _mirror_upper)."""
    for start, stop in blocks:
        out[:stop, start:stop].addmm_(rows[:, :stop].T, rows[:, start:stop])


def _mirror_upper(out: Tensor, blocks: list[tuple[int, int]]) -> Tensor:
    """Fill the blocks below the diagonal ``blocks`` from those above; returns ``out``."""
    for start, stop in blocks:
        out[stop:, start:stop].copy_(out[start:stop, stop:].T)
    return out


def _gram_blocks(dim: int) -> list[tuple[int, int]]:
    """Column blocks of at least 256 (at most 8) for the symmetric products of ``dim`` x ``dim``."""
    return _column_blocks(dim, max(1, min(8, dim // 256)))


def _psd_sqrt(cov: Tensor) -> Tensor:
    """Symmetric square root of a covariance; tiny negative eigenvalues from rounding count as 0."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


class FrechetReference:
    """Reference statistics (mu, cov) with a square-root factor of cov computed once.

    FD = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr sqrt(C1 C2), and tr sqrt(C1 C2) is the sum of the
    square roots of the eigenvalues of the symmetric PSD matrix R^T C1 R for any R with
    R R^T = C2 (the same spectrum as C1 C2). R is the Cholesky factor of C2, or its symmetric
    square root where C2 is singular. That needs one symmetric eigenvalue problem per evaluation
    instead of the general matrix square root of pytorch-fid.
    """

    def __init__(self, mu: np.ndarray | Tensor, cov: np.ndarray | Tensor) -> None:
        self.mu = _as_double(mu).reshape(-1)
        self.cov = _as_double(cov)
        if self.cov.shape != (self.mu.numel(), self.mu.numel()):
            raise ValueError(f"covariance shape {tuple(self.cov.shape)} does not match mean "
                             f"length {self.mu.numel()}")
        self._factor: Tensor | None = None
        self._triangular = False

    @property
    def dim(self) -> int:
        return self.mu.numel()

    @property
    def factor(self) -> Tensor:
        """R with R R^T = cov: the Cholesky factor, or the symmetric square root where cov is
        singular (computed once)."""
        if self._factor is None:
            factor, info = torch.linalg.cholesky_ex(self.cov)
            self._triangular = int(info) == 0
            self._factor = factor if self._triangular else _psd_sqrt(self.cov)
        return self._factor

    def _times_factor(self, matrix: Tensor) -> Tensor:
        """matrix @ R."""
        factor = self.factor
        if not self._triangular:
            return matrix @ factor
        return _times_triangular(matrix, factor, lower=True)

    def _factor_times(self, matrix: Tensor) -> Tensor:
        """R @ matrix, in matrix's dtype."""
        factor = self.factor.to(matrix.dtype)
        if not self._triangular:
            return factor @ matrix
        return _times_triangular(matrix.T, factor.T, lower=False).T

    def _product(self, cov: Tensor) -> Tensor:
        """R^T cov R = (cov R)^T R for symmetric cov, symmetrised."""
        product = self._times_factor(self._times_factor(cov).T)
        return 0.5 * (product + product.T)

    def _value(self, mu: Tensor, cov: Tensor, eigvals: Tensor) -> float:
        diff = mu - self.mu
        trace_sqrt = eigvals.clamp(min=0).sqrt().sum()
        return float(diff @ diff + cov.trace() + self.cov.trace() - 2 * trace_sqrt)

    def distance(self, mu: np.ndarray | Tensor, cov: np.ndarray | Tensor) -> float:
        """Frechet distance between N(mu, cov) and this reference."""
        mu, cov = _as_double(mu).reshape(-1), _as_double(cov)
        return self._value(mu, cov, torch.linalg.eigvalsh(self._product(cov)))

    def tangent(self, mu: np.ndarray | Tensor, cov: np.ndarray | Tensor,
                vector_dtype: torch.dtype = torch.float32) -> tuple[float, Tensor]:
        """FD at (mu, cov) and the symmetric matrix H with d tr sqrt(C1 C2) = 1/2 <H, d cov>, so
        that d FD = 2 (mu - mu_ref) . d mu + tr(d cov) - <H, d cov>.

        With P = R^T cov R = V diag(lam) V^T, d tr sqrt(P) = 1/2 tr(P^{-1/2} R^T dcov R), so
        H = (R V) diag(lam^{-1/2}) (R V)^T. Eigenvalues at rounding level (below dim * 100 eps *
        lam_max) count as zero: a covariance near this one (a leave-out subset's) lies in the
        range of it, so their directions carry nothing but rounding.

        The value and the weights lam^{-1/2} come from float64 eigenvalues (the value is exactly
        :meth:`distance`'s). The eigenvectors V may be computed in ``vector_dtype``: in float32
        they cost 1.5 s instead of 3.7 s at 3072 dimensions on 2 cores, and paired with float64
        eigenvalues they move first-order block values by ~3e-4 of their spread. (float32
        eigenvalues would not do: the small ones carry percent-level errors, and H weights them
        most.)
        """
        mu, cov = _as_double(mu).reshape(-1), _as_double(cov)
        product = self._product(cov)
        # torch's own LAPACK: scipy's is faster alone, but its OpenBLAS threads then compete
        # with torch's for the cores and slowed the toy grid's sampling and PAS fits two- to
        # threefold.
        eigvals = torch.linalg.eigvalsh(product)
        eigvecs = torch.linalg.eigh(product.to(vector_dtype)).eigenvectors
        cut = float(eigvals.max().clamp(min=0)) * self.dim * 100 * torch.finfo(torch.float64).eps
        quarter = torch.where(eigvals > cut, eigvals.clamp(min=cut).rsqrt(), 0.0).sqrt()
        weighted = self._factor_times(eigvecs) * quarter.to(vector_dtype)
        blocks = _gram_blocks(self.dim)
        tangent = torch.zeros(self.dim, self.dim, dtype=vector_dtype, device=weighted.device)
        _add_upper_gram(tangent, weighted.T, blocks)
        return self._value(mu, cov, eigvals), _mirror_upper(tangent, blocks).double()


def matrix_inner(first: Tensor, second: Tensor) -> float:
    """<A, B> = sum_ij A_ij B_ij of two contiguous matrices, in one pass without a temporary."""
    return float(torch.dot(first.reshape(-1), second.reshape(-1)))


def frechet_distance(mu1: np.ndarray | Tensor, cov1: np.ndarray | Tensor,
                     mu2: np.ndarray | Tensor, cov2: np.ndarray | Tensor) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2) (same value as pytorch-fid's)."""
    return FrechetReference(mu2, cov2).distance(mu1, cov1)


def _check_features(features: Tensor, dim: int) -> None:
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"expected features of shape [B, {dim}], got {tuple(features.shape)}")


class MomentAccumulator:
    """Running count, sum and sum of outer products of feature vectors, in float64.

    Features are centred at a fixed ``shift`` (e.g. the reference mean) before they are summed,
    which keeps the covariance free of cancellation when the mean is large relative to the
    spread; the shift is a constant, so sums from different batches or ranks still add up.
    """

    def __init__(self, dim: int, *, shift: Tensor | None = None, device: torch.device | str = "cpu"):
        self.dim = dim
        self.shift = (torch.zeros(dim, dtype=torch.float64) if shift is None else shift.double())
        self.shift = self.shift.to(device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        # An update fills only the blocks on and above the diagonal; sums() mirrors them.
        self._blocks = _gram_blocks(dim)
        self._mirrored = True

    def update(self, features: Tensor) -> None:
        """Add a batch ``[B, dim]`` of feature vectors."""
        _check_features(features, self.dim)
        centred = features.to(device=self.total.device, dtype=torch.float64) - self.shift
        self.count += centred.shape[0]
        self.total += centred.sum(dim=0)
        _add_upper_gram(self.outer, centred, self._blocks)
        self._mirrored = False

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`mean_cov`."""
        if not self._mirrored:
            _mirror_upper(self.outer, self._blocks)
            self._mirrored = True
        return [self.count, self.total, self.outer]

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """Sample mean and unbiased (ddof=1) covariance, float64 on the CPU."""
        count = float(self.count)
        if count < MIN_SAMPLES:
            raise ValueError(f"need at least {MIN_SAMPLES} samples for a covariance, got {count:.0f}")
        mean = (self.total / count).cpu()
        outer = self.sums()[2].cpu()
        # Exactly symmetric: sums() mirrors the outer products, and torch.outer(m, m) is symmetric.
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        return mean + self.shift.cpu(), cov


class BlockMoments:
    """:class:`MomentAccumulator` sums per seed block: seed n goes to block n mod ``blocks``.

    The full-sample moments are the sum over blocks, so keeping blocks costs memory (``blocks``
    outer-product sums, and up to FLUSH_ROWS rows waiting per block) but no extra arithmetic.
    """

    def __init__(self, dim: int, blocks: int, *, shift: Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.parts = [MomentAccumulator(dim, shift=shift, device=device) for _ in range(blocks)]
        self._waiting: list[list[Tensor]] = [[] for _ in range(blocks)]

    def update(self, features: Tensor, seeds: Sequence[int]) -> None:
        """Add a batch ``[B, dim]`` whose rows are the samples of ``seeds`` (B of them)."""
        if len(seeds) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows for {len(seeds)} seeds")
        _check_features(features, self.parts[0].dim)  # rows may wait: check them now
        block_of = torch.as_tensor(list(seeds), device=features.device) % len(self.parts)
        for block in block_of.unique().tolist():
            waiting = self._waiting[block]
            waiting.append(features[block_of == block])
            if sum(len(rows) for rows in waiting) >= FLUSH_ROWS:
                self._flush(block)

    def _flush(self, block: int) -> None:
        if self._waiting[block]:
            self.parts[block].update(torch.cat(self._waiting[block]))
            self._waiting[block] = []

    def _settled(self) -> list[MomentAccumulator]:
        """The per-block sums with every waiting row added."""
        for block in range(len(self.parts)):
            self._flush(block)
        return self.parts

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before reading moments."""
        return [tensor for part in self._settled() for tensor in part.sums()]

    def total(self) -> MomentAccumulator:
        """The moments of every block together."""
        first = self.parts[0]
        merged = MomentAccumulator(first.dim, shift=first.shift, device=first.total.device)
        for part in self._settled():
            for into, added in zip(merged.sums(), part.sums()):
                into += added
        return merged

    def leave_one_out_ready(self) -> bool:
        """Whether every block has a sample and every leave-one-block-out set has enough."""
        counts = [float(part.count) for part in self._settled()]
        return len(counts) > 1 and min(counts) > 0 and sum(counts) - max(counts) >= MIN_SAMPLES


def leave_one_out_first_order(reference: FrechetReference, moments: BlockMoments
                              ) -> tuple[float, list[float]]:
    """FD of all blocks, and FD without each block to first order in the square-root term (the
    mean and trace terms exactly), from the block sums: two D x D passes per block.

    Without block b the centred sums are n' = n - n_b, t' = t - t_b, O' = O - O_b, so
    cov' = (O' - t' t'^T / n') / (n' - 1) and <H, cov'> = (<H, O> - <H, O_b> - t'^T H t' / n')
    / (n' - 1) with H from :meth:`FrechetReference.tangent`.
    """
    full = moments.total()
    mu, cov = full.mean_cov()
    value, tangent = reference.tangent(mu, cov)
    diff = mu - reference.mu
    count, total, outer = (t.cpu() for t in full.sums())
    along_full = matrix_inner(tangent, outer)
    full_terms = float(cov.trace()) - matrix_inner(tangent, cov)
    values = []
    for part in moments.parts:
        part_count, part_total, part_outer = (t.cpu() for t in part.sums())
        rest, rest_total = float(count - part_count), total - part_total
        rest_diff = rest_total / rest + full.shift.cpu() - reference.mu
        trace = (float(outer.trace() - part_outer.trace()) - float(rest_total @ rest_total) / rest)
        along = (along_full - matrix_inner(tangent, part_outer)
                 - float(rest_total @ (tangent @ rest_total)) / rest)
        values.append(value + float(rest_diff @ rest_diff - diff @ diff)
                      + (trace - along) / (rest - 1) - full_terms)
    return value, values


def jackknife_se(leave_one_out: Sequence[float]) -> float:
    """Jackknife standard error of a statistic from its K leave-one-block-out values:
    sqrt((K - 1) / K * sum_k (theta_k - mean)^2)."""
    values = np.asarray(leave_one_out, dtype=np.float64)
    count = values.size
    return math.sqrt((count - 1) / count * float(np.square(values - values.mean()).sum()))


class FrechetAccumulator:
    """Streams samples through ``features`` into per-block moments; :meth:`compute` gives the
    FD/FID of all samples, :meth:`extra_fields` the leave-one-block-out values and the SE."""

    def __init__(self, features: Features, reference: FrechetReference,
                 device: torch.device | str = "cpu", blocks: int = 1) -> None:
        self.features = features
        self.reference = reference
        self.blocks = blocks
        self.moments = BlockMoments(reference.dim, blocks, shift=reference.mu, device=device)
        self._seen = 0
        self._evaluation: tuple[float, list[float] | None] | None = None

    def update(self, samples: Tensor, class_labels: Tensor | None = None,
               seeds: Sequence[int] | None = None) -> None:
        """Add a batch of samples (any shape ``[B, ...]``) drawn from ``seeds``; labels do not
        enter the statistics. Without ``seeds`` the samples count as the next consecutive ones."""
        feats = self.features(samples)
        if seeds is None:
            seeds = range(self._seen, self._seen + feats.shape[0])
            self._seen += feats.shape[0]
        self.moments.update(feats.reshape(feats.shape[0], -1), seeds)
        self._evaluation = None

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`compute`."""
        self._evaluation = None
        return self.moments.sums()

    def _evaluated(self) -> tuple[float, list[float] | None]:
        """The full-sample value and the leave-one-block-out values (None without blocks),
        computed once per state of the sums (one eigendecomposition serves both)."""
        if self._evaluation is None:
            if self.moments.leave_one_out_ready():
                self._evaluation = leave_one_out_first_order(self.reference, self.moments)
            else:
                self._evaluation = self.reference.distance(*self.moments.total().mean_cov()), None
        return self._evaluation

    def compute(self) -> float:
        """Frechet distance of everything added so far to the reference statistics."""
        return self._evaluated()[0]

    def leave_one_out(self) -> list[float] | None:
        """The metric without block k, for each k, to first order around the full sample (see
        the module docstring); None with one block or too few samples."""
        return self._evaluated()[1]

    def extra_fields(self) -> dict[str, object]:
        """Row fields besides the metric's value: ``blocks``, the leave-one-block-out values
        ``value_blocks`` and their jackknife standard error ``value_se`` (None without blocks)."""
        values = self.leave_one_out()
        return {"blocks": self.blocks, "value_blocks": values,
                "value_se": jackknife_se(values) if values is not None else None}


def rmse(samples: Tensor, targets: Tensor) -> float:
    """Root-mean-square difference over every element, computed in float64."""
    diff = samples.double() - targets.to(device=samples.device, dtype=torch.float64)
    return float(diff.square().mean().sqrt())
