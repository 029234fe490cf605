"""Coordinate fitting: the exact optimisers (L2 closed form, L1, pseudo-Huber), the reference's
Adam, acceptance and early stopping."""

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import torch

from pas.search import (
    FitSettings,
    Objective,
    Resident,
    accept,
    adam_coords,
    fit_coords,
    is_flat,
    l1_coords,
    least_squares_coords,
    loss_name,
    loss_value,
    pseudo_huber_coords,
)

F64 = torch.float64


def _problem(samples: int = 40, q: int = 3, dim: int = 16, seed: int = 0):
    """Per-sample orthonormal bases, coordinate-major [q, S, D], and offsets x - target [S, D]."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(samples, dim, q, generator=gen, dtype=F64)).Q
    offset = torch.randn(samples, dim, generator=gen, dtype=F64)
    return offset, basis.permute(2, 0, 1).contiguous()


def test_l2_closed_form_equals_brute_force_least_squares():
    offset, basis = _problem()
    dt = -0.7
    coords = least_squares_coords(Resident(offset, basis, chunk=7), dt)
    # The same objective written as one dense least-squares problem over all S*D residuals.
    design = dt * basis.reshape(3, -1).T.numpy()
    expected, *_ = np.linalg.lstsq(design, -offset.reshape(-1).numpy(), rcond=None)
    assert np.allclose(coords.numpy(), expected, rtol=0, atol=1e-12)


def test_l2_with_an_unused_coordinate_gives_it_zero():
    offset, basis = _problem()
    basis[2] = 0.0
    coords = least_squares_coords(Resident(offset, basis), 0.5)
    assert coords[2] == 0.0
    fewer = least_squares_coords(Resident(offset, basis[:2]), 0.5)
    assert torch.allclose(coords[:2], fewer, atol=1e-12)


@pytest.mark.parametrize("name", ["L1", "pseudo_huber"])
def test_objective_gradient_matches_autograd(name):
    offset, basis = _problem()
    coords = torch.tensor([0.3, -1.2, 2.0], dtype=F64, requires_grad=True)
    value, grad = Objective(name, offset, basis, -0.7)(coords.detach())
    residual = offset - 0.7 * torch.einsum("qsd,q->sd", basis, coords)
    expected = loss_value(name, residual)
    expected.backward()
    assert torch.allclose(value, expected.detach(), rtol=1e-14)
    assert torch.allclose(grad, coords.grad, rtol=1e-12, atol=1e-15)


def test_l1_adam_reaches_the_l1_minimum():
    noise, basis = _problem(samples=20, q=2, dim=8)
    dt = -1.0
    # Residuals vanish near c = (1.5, -2) up to noise, so the minimum is far from the start.
    offset = 0.1 * noise - dt * torch.einsum(
        "qsd,q->sd", basis, torch.tensor([1.5, -2.0], dtype=F64)
    )

    def objective(c):
        residual = offset + dt * torch.einsum("qsd,q->sd", basis, torch.as_tensor(c, dtype=F64))
        return float(loss_value("L1", residual))

    best = scipy.optimize.minimize(
        objective, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    ).fun
    start = torch.zeros(2, dtype=F64)
    coords, epochs = adam_coords(  # in chunks of 6, 6, 6 and 2 samples
        Resident(offset, basis, chunk=6), dt, start,
        FitSettings("L1", lr=0.01, epochs=1000, early_stop=0),
    )
    assert epochs == 1000
    assert objective(coords) == pytest.approx(best, abs=2e-4)
    assert objective(coords) < objective(start) - 0.1
    assert torch.allclose(coords, torch.tensor([1.5, -2.0], dtype=F64), atol=0.05)


def test_adam_stops_when_the_loss_is_flat():
    offset, basis = _problem(samples=5, q=2, dim=4)
    # A zero basis makes the loss constant: flat after exactly `early_stop` epochs.
    _, epochs = adam_coords(
        Resident(offset, torch.zeros_like(basis)),
        1.0,
        torch.zeros(2, dtype=F64),
        FitSettings("pseudo_huber", epochs=1000, early_stop=7),
    )
    assert epochs == 7


def test_losses():
    residual = torch.tensor([[0.3, -0.4], [0.0, 0.0]], dtype=F64)
    assert float(loss_value("L1", residual)) == pytest.approx(0.7 / 4)
    assert float(loss_value("L2", residual)) == pytest.approx(0.25 / 4)
    per_sample = np.sqrt(0.25 / 2 + 0.03**2) - 0.03
    assert float(loss_value("pseudo_huber", residual)) == pytest.approx(per_sample / 2)
    assert loss_name("pseudo_Huber") == "pseudo_huber" and loss_name("l1") == "L1"
    with pytest.raises(ValueError, match="valid: L1, L2, pseudo_huber"):
        loss_name("LPIPS")


def test_acceptance_boundary():
    # L_fit == L_orig - tau is rejected; the next float below it is accepted (pas-spec 6.2).
    assert not accept(1.0, 0.75, 0.25)
    assert accept(1.0, float(np.nextafter(0.75, 0.0)), 0.25)
    assert not accept(1.0, 1.0, 0.0)


def test_flat_window():
    assert not is_flat([1.0, 1.0], 3)
    assert is_flat([5.0, 1.0, 1.0 + 0.5e-5, 1.0], 3)
    assert not is_flat([1.0, 1.0 + 2e-5, 1.0], 3)
    assert not is_flat([1.0] * 20, 0)


def _l1_lp_minimum(offset, basis, dt):
    """The L1 minimiser as a linear programme (HiGHS): min sum t, -t <= o + A c <= t."""
    design = dt * basis.reshape(basis.shape[0], -1).T.numpy()
    o = offset.reshape(-1).numpy()
    n, q = design.shape
    eye = scipy.sparse.identity(n, format="csr")
    a_ub = scipy.sparse.vstack([
        scipy.sparse.hstack([scipy.sparse.csr_matrix(design), -eye]),
        scipy.sparse.hstack([scipy.sparse.csr_matrix(-design), -eye]),
    ])
    cost = np.concatenate([np.zeros(q), np.ones(n)])
    bounds = [(None, None)] * q + [(0, None)] * n
    result = scipy.optimize.linprog(
        cost, A_ub=a_ub, b_ub=np.concatenate([-o, o]), bounds=bounds, method="highs"
    )
    assert result.status == 0
    return result.x[:q], result.fun / n


def _shifted_problem(samples, q, dim, seed=0):
    """Offsets whose best coordinates are far from the reference start, plus heavy-ish noise."""
    noise, basis = _problem(samples, q, dim, seed)
    truth = torch.linspace(1.0, -2.0, q, dtype=F64)
    return 0.3 * noise + 0.7 * torch.einsum("qsd,q->sd", basis, truth), basis


@pytest.mark.parametrize("subsample, chunk, cap", [(1 << 16, None, 1 << 21), (300, None, 1 << 21),
                                                  (300, 7, 50)])
def test_exact_l1_equals_the_linear_programme(monkeypatch, subsample, chunk, cap):
    """300: the rough fit sees a stride through the residuals and the polish must recover; chunks
    of 7 samples and a close set capped at 50 residuals (trimmed while passing) reach it too."""
    monkeypatch.setattr("pas.search.SUBSAMPLE", subsample)
    monkeypatch.setattr("pas.search.NEAR_CAP", cap)
    offset, basis = _shifted_problem(samples=60, q=4, dim=32)
    dt = -0.7
    start = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=F64)
    coords = l1_coords(Resident(offset, basis, chunk), dt, start)
    best, minimum = _l1_lp_minimum(offset, basis, dt)
    value = float(loss_value("L1", offset + dt * torch.einsum("qsd,q->sd", basis, coords)))
    assert value == pytest.approx(minimum, rel=1e-9)
    assert np.allclose(coords.numpy(), best, atol=1e-6)


def test_exact_pseudo_huber_equals_a_direct_minimiser():
    offset, basis = _shifted_problem(samples=40, q=3, dim=16)
    dt = 0.9

    def objective(c):
        residual = offset + dt * torch.einsum("qsd,q->sd", basis, torch.as_tensor(c, dtype=F64))
        return float(loss_value("pseudo_huber", residual))

    direct = scipy.optimize.minimize(objective, np.zeros(3), method="BFGS", options={"gtol": 1e-12})
    coords = pseudo_huber_coords(Resident(offset, basis, chunk=9), dt, torch.zeros(3, dtype=F64))
    assert objective(coords) == pytest.approx(direct.fun, rel=1e-10)
    assert objective(coords) <= direct.fun * (1 + 1e-12)
    assert np.allclose(coords.numpy(), direct.x, atol=1e-5)


@pytest.mark.parametrize("loss", ["L1", "pseudo_huber"])
def test_exact_fit_is_never_worse_than_adam(loss):
    offset, basis = _shifted_problem(samples=200, q=4, dim=64, seed=3)
    dt = -1.3
    start = torch.tensor([0.2, 0.0, 0.0, 0.0], dtype=F64)
    exact, epochs = fit_coords(Resident(offset, basis), dt, start, FitSettings(loss))
    adam, _ = fit_coords(Resident(offset, basis), dt, start, FitSettings(loss, optimizer="adam"))

    def value(c):
        return float(loss_value(loss, offset + dt * torch.einsum("qsd,q->sd", basis, c)))

    assert epochs == 0
    assert value(exact) <= value(adam)
