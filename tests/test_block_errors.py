"""Seed-block error bars of FD/FID: leave-one-block-out values, their jackknife SE, calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from run_helpers import TINY_GRID, read_rows, write_grid

import solvers
from bench.grids import load_grid
from bench.metrics.frechet import (
    FrechetAccumulator,
    FrechetReference,
    MomentAccumulator,
    flatten_features,
    jackknife_se,
    matrix_inner,
)
from bench.models.registry import get_dataset
from bench.plan import Overrides, build_plan
from bench.run import main


def _reference(dim: int, seed: int) -> FrechetReference:
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(dim, dim))
    return FrechetReference(rng.normal(size=dim), root @ root.T / dim + np.eye(dim))


def _exact_leave_one_out(acc: FrechetAccumulator) -> list[float]:
    """FD recomputed without each block, from the stored moments (the total minus the block's)."""
    full = acc.moments.total()
    values = []
    for part in acc.moments.parts:
        rest = MomentAccumulator(full.dim, shift=full.shift)
        for into, whole, left_out in zip(rest.sums(), full.sums(), part.sums()):
            into += whole - left_out
        values.append(acc.reference.distance(*rest.mean_cov()))
    return values


def test_block_moments_give_pytorch_fid_on_the_subsets():
    """The moments left after removing a block are those of the other blocks' samples."""
    reference = _reference(4, 0)
    data = torch.from_numpy(np.random.default_rng(1).normal(size=(53, 4)) * 1.5 + 0.3)
    acc = FrechetAccumulator(flatten_features, reference, blocks=5)
    for chunk, seeds in zip(torch.split(data, 8), [range(s, min(s + 8, 53)) for s in range(0, 53, 8)]):
        acc.update(chunk, seeds=seeds)
    mu, cov = reference.mu.numpy(), reference.cov.numpy()
    for block, value in enumerate(_exact_leave_one_out(acc)):
        kept = data.numpy()[np.arange(53) % 5 != block]
        expected = calculate_frechet_distance(kept.mean(0), np.cov(kept, rowvar=False), mu, cov)
        assert value == pytest.approx(expected, rel=1e-9)
    fields = acc.extra_fields()
    assert fields["blocks"] == 5 and fields["value_se"] == pytest.approx(
        jackknife_se(fields["value_blocks"]), rel=1e-15)
    everything = calculate_frechet_distance(data.numpy().mean(0), np.cov(data.numpy(), rowvar=False),
                                            mu, cov)
    assert acc.compute() == pytest.approx(everything, rel=1e-9)


@pytest.mark.parametrize("singular", [False, True])
def test_first_order_value_is_exact_to_second_order(singular):
    """FD at (mu + e a, cov + e B) minus its first-order value shrinks like e^2 (the derivative of
    tr sqrt is right), also for a singular reference (symmetric square root instead of Cholesky)."""
    rng = np.random.default_rng(7)
    reference = _reference(5, 8)
    if singular:
        root = rng.normal(size=(5, 3))
        reference = FrechetReference(reference.mu, root @ root.T)
    root = rng.normal(size=(5, 5))
    mu, cov = torch.from_numpy(rng.normal(size=5)), torch.from_numpy(root @ root.T + np.eye(5))
    step_mu, step = torch.from_numpy(rng.normal(size=5)), torch.from_numpy(rng.normal(size=(5, 5)))
    value, tangent = reference.tangent(mu, cov, vector_dtype=torch.float64)
    assert value == reference.distance(mu, cov)
    errors = []
    for eps in (1e-2, 1e-3):
        moved_mu, change = mu + eps * step_mu, eps * (step + step.T)
        first_order = (value + float((moved_mu - reference.mu).square().sum())
                       - float((mu - reference.mu).square().sum())
                       + float(change.trace()) - matrix_inner(tangent, change))
        errors.append(abs(reference.distance(moved_mu, cov + change) - first_order))
    assert 50 < errors[0] / errors[1] < 200


def test_block_values_ignore_batches_and_ranks():
    reference = _reference(3, 2)
    data = torch.from_numpy(np.random.default_rng(3).normal(size=(90, 3)))
    whole = FrechetAccumulator(flatten_features, reference, blocks=10)
    whole.update(data, seeds=range(90))
    # Two "ranks" with contiguous seed ranges in batches of 7, their sums then added.
    ranks = [FrechetAccumulator(flatten_features, reference, blocks=10) for _ in range(2)]
    for rank, seeds in zip(ranks, (range(45), range(45, 90))):
        for start in range(seeds.start, seeds.stop, 7):
            batch = range(start, min(start + 7, seeds.stop))
            rank.update(data[batch.start:batch.stop], seeds=batch)
    for mine, theirs in zip(ranks[0].sums(), ranks[1].sums()):
        mine += theirs
    assert ranks[0].compute() == pytest.approx(whole.compute(), rel=1e-12)
    np.testing.assert_allclose(ranks[0].leave_one_out(), whole.leave_one_out(), rtol=1e-11)
    np.testing.assert_allclose(_exact_leave_one_out(ranks[0]), _exact_leave_one_out(whole),
                               rtol=1e-11)


def test_jackknife_of_the_mean_is_the_standard_error_of_block_means():
    rng = np.random.default_rng(4)
    block_means = rng.normal(size=8)
    # The mean without block k, for equal blocks; its jackknife SE is sd(block means) / sqrt(K).
    leave_one_out = (block_means.sum() - block_means) / 7
    assert jackknife_se(leave_one_out) == pytest.approx(block_means.std(ddof=1) / np.sqrt(8),
                                                        rel=1e-12)


def test_no_error_bar_without_blocks_or_samples():
    reference = _reference(2, 5)
    one = FrechetAccumulator(flatten_features, reference)
    one.update(torch.randn(20, 2, dtype=torch.float64))
    assert one.extra_fields() == {"blocks": 1, "value_blocks": None, "value_se": None}
    sparse = FrechetAccumulator(flatten_features, reference, blocks=10)
    sparse.update(torch.randn(6, 2, dtype=torch.float64), seeds=range(6))
    assert sparse.extra_fields()["value_se"] is None  # blocks 6-9 are empty


def _fd_with_error(denoiser, reference, offset: int, count: int) -> tuple[float, float]:
    seeds = range(offset, offset + count)
    latents, _ = solvers.latents_for_seeds(seeds, denoiser.shape, dtype=torch.float64)
    samples = solvers.sample(denoiser, latents, "ddim", 5)
    acc = FrechetAccumulator(flatten_features, reference, blocks=10)
    acc.update(samples, seeds=seeds)
    return acc.compute(), acc.extra_fields()["value_se"], jackknife_se(_exact_leave_one_out(acc))


@pytest.mark.parametrize("dataset, count", [("gmm2d", 400), ("digits", 600)])
def test_jackknife_se_matches_the_spread_over_independent_seed_sets(dataset, count):
    """20 disjoint seed sets: the mean jackknife SE is within a factor 1.5 of the standard
    deviation of the 20 full-sample FDs (the repeat spread itself is known to about +-16%), and
    within 10% of the jackknife SE of FD recomputed without each block."""
    spec = get_dataset(dataset)
    denoiser = spec.build(device="cpu", dtype=torch.float64)
    reference = FrechetReference(*spec.exact_stats())
    values, errors, exact = zip(*(_fd_with_error(denoiser, reference, 100_000 + k * count, count)
                                  for k in range(20)))
    ratio = np.mean(errors) / np.std(values, ddof=1)
    assert 1 / 1.5 < ratio < 1.5, (np.mean(errors), np.std(values, ddof=1))
    assert np.mean(errors) == pytest.approx(np.mean(exact), rel=0.1)


def test_blocks_option_sets_the_row_and_only_a_non_default_count_enters_the_hash(tmp_path):
    grid = write_grid(tmp_path)
    cells = {k: build_plan(load_grid(str(grid)), Overrides(pas="off", blocks=k)) for k in (None, 10, 4)}
    hashes = {k: [cell.config_hash for cell in plan] for k, plan in cells.items()}
    assert hashes[None] == hashes[10] and set(hashes[4]).isdisjoint(hashes[10])
    # A dataset's own blocks key; the command line overrides it.
    local = write_grid(tmp_path, TINY_GRID + "\n[datasets.digits]\nblocks = 3\n", "local.toml")
    assert {(c.dataset, c.blocks) for c in build_plan(load_grid(str(local)))} == {
        ("gmm2d", 10), ("digits", 3)}
    assert {c.blocks for c in build_plan(load_grid(str(local)), Overrides(blocks=4))} == {4}
    assert main(["--grid", str(grid), "--out", str(tmp_path / "out"), "--datasets", "gmm2d",
                 "--solvers", "ddim", "--pas", "off", "--blocks", "4", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    row, = read_rows(tmp_path / "out")
    assert row["blocks"] == 4 and len(row["value_blocks"]) == 4
    assert row["value_se"] == pytest.approx(jackknife_se(row["value_blocks"]), rel=1e-12)


def test_float32_eigenvectors_keep_the_first_order_block_terms():
    """The tangent's eigenvectors in float32 (its default: 2.4x faster at 3072 dimensions) move
    the first-order block terms <H, cov without block b - cov> by under 2e-3 of their spread
    (2e-4 to 3.3e-4 on the MKL code paths tried), on a reference shaped like digits32's: low rank
    plus 0.05^2 I, so that P is ill-conditioned (~1e8). Float32 eigenvalues of the same P would
    give H nothing but rounding in its smallest directions, which H weights most."""
    rng = np.random.default_rng(11)
    dim, rank, count, blocks = 640, 24, 2000, 10  # 640: H built in 2 column blocks
    spread = rng.normal(size=(dim, rank)) / np.sqrt(rank)
    reference = FrechetReference(np.zeros(dim), spread @ spread.T + 0.05**2 * np.eye(dim))
    samples = torch.from_numpy(rng.normal(size=(count, rank)) @ (1.2 * spread.T)
                               + 0.06 * rng.normal(size=(count, dim)))
    mu, cov = samples.mean(0), samples.T.cov()
    eigvals = torch.linalg.eigvalsh(reference._product(cov))
    assert eigvals.max() / eigvals.min() > 1e7
    changes = [samples[torch.arange(count) % blocks != b].T.cov() - cov for b in range(blocks)]
    terms = {dtype: np.array([matrix_inner(reference.tangent(mu, cov, dtype)[1], change)
                              for change in changes])
             for dtype in (torch.float32, torch.float64)}
    error = np.abs(terms[torch.float32] - terms[torch.float64]).max()
    assert error < 2e-3 * terms[torch.float64].std()
