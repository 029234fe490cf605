"""The per-sample PAS basis: orthonormal, exact PCA, sign rule, batch-independent, no noise rows."""

import numpy as np
import pytest
import torch

from pas.basis import build_basis, relative_floor

F64 = torch.float64


def _buffer(batch: int, dim: int = 64, used: int = 3, seed: int = 0):
    """A trajectory-like buffer: x_T (large), directions, the current state and direction."""
    gen = torch.Generator().manual_seed(seed)
    x_T = 80 * torch.randn(batch, 1, 8, dim // 8, generator=gen, dtype=F64)
    dirs = [x_T / 80 + 0.3 * torch.randn(x_T.shape, generator=gen, dtype=F64) for _ in range(used)]
    x = x_T - 5 * sum(dirs)
    d = x / 10 + 0.3 * torch.randn(x_T.shape, generator=gen, dtype=F64)
    return x, d, [x_T, *dirs], x_T


def _vectors(*args) -> torch.Tensor:
    """build_basis's vectors sample-major, [B, k, D]."""
    return build_basis(*args).vectors.transpose(0, 1)


def test_rows_are_orthonormal_and_u1_is_the_normalised_direction():
    x, d, buf, x_T = _buffer(32)
    basis = _vectors(x, d, buf, x_T, 4)
    assert basis.shape == (32, 4, 64) and basis.dtype == F64
    gram = basis @ basis.transpose(1, 2)
    assert (gram - torch.eye(4, dtype=F64)).abs().max() < 1e-10
    flat = d.reshape(32, -1)
    assert torch.allclose(basis[:, 0], flat / flat.norm(dim=1, keepdim=True), rtol=0, atol=1e-15)


def test_principal_directions_match_numpy_svd():
    """u_2..u_k = Gram-Schmidt of the top right singular vectors of the centred buffer (spec 3)."""
    x, d, buf, x_T = _buffer(5)
    basis = _vectors(x, d, buf, x_T, 4).numpy()
    for s in range(5):
        rows = np.stack([t[s].reshape(-1).numpy() for t in [*buf, d]])
        _, _, vt = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
        q, _ = np.linalg.qr(np.concatenate([rows[-1:], vt[:3]]).T)
        # Same spans, nested: QR of [d, V_1, V_2, V_3] gives the Gram-Schmidt vectors up to sign.
        assert np.allclose(np.abs(np.sum(q.T * basis[s], axis=1)), 1.0, atol=1e-9)


def test_sign_rule():
    x, d, buf, x_T = _buffer(16)
    basis = _vectors(x, d, buf, x_T, 4)
    progress = (basis[:, 1:] * (x - x_T).reshape(16, 1, -1)).sum(-1)
    assert (progress > 0).all()
    # At step 0 (x == x_T) the product above is zero, so <u_k, x_T> decides.
    start = build_basis(x_T, d, [x_T], x_T, 2)
    assert start.size == 2
    assert ((start.vectors[1] * x_T.reshape(16, -1)).sum(-1) > 0).all()


@pytest.mark.invariance
def test_same_result_alone_or_in_batches():
    """Batched matrix products may round differently per batch size (another BLAS kernel or code
    path), so the claim is agreement to a tolerance, not bit-identity: 1e-10 on unit vectors in
    float64. The small principal directions amplify rounding by about lambda_max / lambda_k of
    the buffer's centred Gram matrix (~1e4 here, x_T being 80x larger than the directions)."""
    x, d, buf, x_T = _buffer(64)
    whole = _vectors(x, d, buf, x_T, 4)
    for size in (1, 7):
        parts = [
            _vectors(
                x[i : i + size],
                d[i : i + size],
                [b[i : i + size] for b in buf],
                x_T[i : i + size],
                4,
            )
            for i in range(0, 64, size)
        ]
        assert torch.allclose(torch.cat(parts), whole, rtol=0, atol=1e-10)


def test_rank_deficient_buffer_yields_no_noise_direction():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 6, 64, generator=gen, dtype=F64)
    # Every row lies in span{a, b}: the data support u_1 = a/|a| and one more direction, no others.
    assert build_basis(a, a, [a + b, 2 * a - b, b], a + b, 4).size == 2
    basis = _vectors(a, a, [a + b, 2 * a - b, b], a + b, 4)
    assert torch.equal(basis[:, 2:], torch.zeros_like(basis[:, 2:]))
    span = torch.linalg.qr(torch.stack([a, b], dim=2)).Q
    inside = span @ (span.transpose(1, 2) @ basis[:, 1, :, None])
    assert torch.allclose(inside[..., 0], basis[:, 1], atol=1e-12)
    # A buffer that centres to zero (no use_xT at step 0) supports u_1 only.
    assert build_basis(a, a, [], a, 4).size == 1
    assert build_basis(a, a, [a], a, 4).size == 1


def test_noise_floor_and_combine():
    assert relative_floor(torch.float32, 5) > relative_floor(F64, 5) > 0
    x, d, buf, x_T = _buffer(4)
    basis = build_basis(x, d, buf, x_T, 3)
    u = basis.vectors
    coords = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    expected = 2.0 * u[0] - u[1] + 0.5 * u[2]
    assert torch.allclose(basis.combine(coords, d).reshape(4, -1), expected, atol=1e-14)
    # Fewer coordinates use the leading rows only.
    assert torch.allclose(basis.combine(coords[:1], d).reshape(4, -1), 2.0 * u[0])
    with pytest.raises(ValueError, match="k must be"):
        build_basis(x, d, buf, x_T, 0)


@pytest.mark.parametrize("chunk_bytes", [1 << 26, 1])
def test_tracker_matches_the_stateless_basis_along_a_trajectory(monkeypatch, chunk_bytes):
    """BasisTracker grows its Gram matrix step by step, skips the steps a sampler does not
    correct, and restarts for a new batch; each step's basis equals build_basis's, whether the
    batch is one chunk or one chunk per sample."""
    monkeypatch.setattr("pas.basis._CHUNK_BYTES", chunk_bytes)
    import solvers
    from bench.models.registry import get_dataset
    from pas.basis import BasisTracker

    den = get_dataset("digits").build(dtype=F64)
    tracker = BasisTracker(4, use_xT=False)
    seen = []

    def hook(ctx):
        expected = build_basis(ctx.x_cur, ctx.direction, list(ctx.used), ctx.x_T, 4)
        if ctx.index % 2 == 0:  # the tracker sees only every other step
            got = tracker.basis(ctx)
            assert got.size == expected.size
            assert torch.allclose(got.vectors, expected.vectors, rtol=0, atol=1e-10), ctx.index
            seen.append(ctx.index)
        # A changed direction at step 1 must reach the buffer (the tracker re-reads it).
        return 1.1 * ctx.direction if ctx.index == 1 else ctx.direction

    for seeds in (range(8), range(8, 13)):
        latents, _ = solvers.latents_for_seeds(seeds, den.shape, dtype=F64)
        solvers.sample(den, latents, "ipndm", 6, correction=hook)
    assert seen == [0, 2, 4] * 2
