"""Coordinate fitting: exact L2, Adam for L1 / pseudo-Huber, acceptance and early stopping."""

import numpy as np
import pytest
import scipy.optimize
import torch

from pas.search import (
    FitSettings,
    Objective,
    accept,
    adam_coords,
    is_flat,
    least_squares_coords,
    loss_name,
    loss_value,
)

F64 = torch.float64


def _problem(samples: int = 40, q: int = 3, dim: int = 16, seed: int = 0):
    """Per-sample orthonormal bases [S, q, D] and offsets x - target [S, D]."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(samples, dim, q, generator=gen, dtype=F64)).Q.transpose(
        1, 2
    )
    offset = torch.randn(samples, dim, generator=gen, dtype=F64)
    return offset, basis


def test_l2_closed_form_equals_brute_force_least_squares():
    offset, basis = _problem()
    dt = -0.7
    coords = least_squares_coords(offset, basis, dt)
    # The same objective written as one dense least-squares problem over all S*D residuals.
    design = dt * basis.permute(0, 2, 1).reshape(-1, 3).numpy()
    expected, *_ = np.linalg.lstsq(design, -offset.reshape(-1).numpy(), rcond=None)
    assert np.allclose(coords.numpy(), expected, rtol=0, atol=1e-12)


def test_l2_with_an_unused_coordinate_gives_it_zero():
    offset, basis = _problem()
    basis[:, 2] = 0.0
    coords = least_squares_coords(offset, basis, 0.5)
    assert coords[2] == 0.0
    assert torch.allclose(coords[:2], least_squares_coords(offset, basis[:, :2], 0.5), atol=1e-12)


@pytest.mark.parametrize("name", ["L1", "pseudo_huber"])
def test_objective_gradient_matches_autograd(name):
    offset, basis = _problem()
    coords = torch.tensor([0.3, -1.2, 2.0], dtype=F64, requires_grad=True)
    value, grad = Objective(name, offset, basis, -0.7)(coords.detach())
    residual = offset - 0.7 * torch.einsum("sqd,q->sd", basis, coords)
    expected = loss_value(name, residual)
    expected.backward()
    assert torch.allclose(value, expected.detach(), rtol=1e-14)
    assert torch.allclose(grad, coords.grad, rtol=1e-12, atol=1e-15)


def test_l1_adam_reaches_the_l1_minimum():
    noise, basis = _problem(samples=20, q=2, dim=8)
    dt = -1.0
    # Residuals vanish near c = (1.5, -2) up to noise, so the minimum is far from the start.
    offset = 0.1 * noise - dt * torch.einsum(
        "sqd,q->sd", basis, torch.tensor([1.5, -2.0], dtype=F64)
    )

    def objective(c):
        residual = offset + dt * torch.einsum("sqd,q->sd", basis, torch.as_tensor(c, dtype=F64))
        return float(loss_value("L1", residual))

    best = scipy.optimize.minimize(
        objective, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    ).fun
    start = torch.zeros(2, dtype=F64)
    coords, epochs = adam_coords(
        offset, basis, dt, start, FitSettings("L1", lr=0.01, epochs=1000, early_stop=0)
    )
    assert epochs == 1000
    assert objective(coords) == pytest.approx(best, abs=2e-4)
    assert objective(coords) < objective(start) - 0.1
    assert torch.allclose(coords, torch.tensor([1.5, -2.0], dtype=F64), atol=0.05)


def test_adam_stops_when_the_loss_is_flat():
    offset, basis = _problem(samples=5, q=2, dim=4)
    # A zero basis makes the loss constant: flat after exactly `early_stop` epochs.
    _, epochs = adam_coords(
        offset,
        torch.zeros_like(basis),
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
