"""End to end on `digits` (float64): PAS improves the data-space Frechet distance, the held-out
gate never lets it make a solver worse, the search follows the same recursion as sampling, and
teachers are cached and shared."""

import itertools
import math

import pytest
import torch

import pas
import pas.adaptive
import solvers
from bench.metrics.frechet import frechet_distance
from bench.models.registry import get_dataset
from pas.search import FitSettings, adam_coords, loss_value
from pas.teacher import (
    TEACHER_SEED_START,
    TeacherRequest,
    inserted_points,
    shared_grid,
    teacher_grid,
    teacher_states,
)

F64 = torch.float64
TRAJECTORIES = 1000
EVAL_SEEDS = range(2000)


@pytest.fixture(scope="module")
def digits():
    spec = get_dataset("digits")
    mean, cov = spec.exact_stats()
    return spec.build(dtype=F64), mean, cov


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pas-cache")


@pytest.fixture(scope="module")
def fitted(digits, cache):
    den = digits[0]
    made = {}

    def get(solver: str, nfe: int) -> pas.PASArtifact:
        if (solver, nfe) not in made:
            made[solver, nfe] = pas.fit(
                den, solver, nfe, trajectories=TRAJECTORIES, dtype=F64, cache_dir=cache,
                progress=False,
            )
        return made[solver, nfe]

    return get


def _fd(digits, solver: str, nfe: int, correction=None) -> float:
    den, mean, cov = digits
    latents, _ = solvers.latents_for_seeds(EVAL_SEEDS, den.shape, dtype=F64)
    x = solvers.sample(den, latents, solver, nfe, correction=correction)
    flat = x.reshape(len(x), -1)
    return frechet_distance(flat.mean(0), torch.cov(flat.T), mean, cov)


@pytest.mark.parametrize(
    "solver, nfe, gain",
    [
        ("ddim", 5, 0.3),
        ("ddim", 10, 0.3),
        ("ipndm", 5, 0.0),
        ("deis", 5, 0.0),
        ("dpmpp", 5, 0.0),
        ("unipc", 5, 0.0),
    ],
)
def test_pas_improves_fd(digits, fitted, solver, nfe, gain):
    art = fitted(solver, nfe)
    assert art.n_params > 0
    base = _fd(digits, solver, nfe)
    corrected = _fd(digits, solver, nfe, art.correction())
    assert corrected <= (1 - gain) * base, (base, corrected)


def _teacher(den, art: pas.PASArtifact, cache) -> torch.Tensor:
    """The teacher states the fit of ``art`` read: [N+1, trajectories + held out, ...]."""
    times = torch.tensor(art.times, dtype=F64)
    request = TeacherRequest.for_student(den, times, art.schedule, art.rho, art.teacher["nfe"])
    seeds = pas.teacher_seeds(art.teacher["trajectories"], art.validate, art.holdout)
    found = teacher_states(den, [request], seeds=seeds, dtype=F64, cache_dir=cache, progress=False)
    assert found.cached
    return found.states(times)


def _replay(den, art: pas.PASArtifact, steps, seeds: range) -> torch.Tensor:
    """Sample ``seeds`` with the search's coordinates at ``steps``: [N+1, S, ...] states."""
    coords = {s.index: s.coords for s in art.search if s.index in steps}
    hook = pas.PASCorrection(coords, art.use_xT, art.num_steps, art.k) if coords else None
    latents, _ = solvers.latents_for_seeds(seeds, den.shape, dtype=F64)
    return solvers.sample(den, latents, art.solver, art.nfe, correction=hook,
                          return_trajectory=True)[1]


def test_search_follows_the_sampling_recursion(digits, fitted, cache):
    """Decision 0.5: the loss recorded for each step is that of the state sampling reaches."""
    den = digits[0]
    art = fitted("ddim", 5)
    teacher = _teacher(den, art, cache)[:, :TRAJECTORIES]
    accepted = {s.index for s in art.search if s.accepted}
    traj = _replay(den, art, accepted, range(TEACHER_SEED_START, TEACHER_SEED_START + TRAJECTORIES))
    assert [s.index for s in art.search] == list(range(5))
    for step in art.search:
        residual = (traj[step.index + 1] - teacher[step.index + 1]).reshape(TRAJECTORIES, -1)
        reached = float(loss_value(art.loss, residual))
        expected = step.loss_after if step.accepted else step.loss_before
        assert math.isclose(reached, expected, rel_tol=1e-9), step
        assert len(step.coords) == step.n_coords
    # With use_xT the centred buffer has rank i+1 at step i: 2, 3, then k = 4 coordinates.
    assert [s.n_coords for s in art.search] == [2, 3, 4, 4, 4]


@pytest.mark.parametrize("solver, nfe", [("ddim", 5), ("dpmpp", 5)])
def test_gate_keeps_the_best_held_out_subset(digits, fitted, cache, solver, nfe):
    den = digits[0]
    art = fitted(solver, nfe)
    record = art.validation
    losses = {tuple(c["steps"]): c["loss"] for c in record["candidates"]}
    searched = tuple(s.index for s in art.search if s.accepted)
    assert losses[()] == record["base"] and losses[searched] == record["searched"]
    assert sorted(art.corrected) == record["kept"]
    assert record["kept_loss"] == min(losses.values()) < record["base"] - record["margin"]
    assert record["margin"] >= art.tau
    # Every candidate drops steps from the search's set; the kept one replays exactly.
    assert all(set(steps) <= set(searched) for steps in losses)
    held = range(TEACHER_SEED_START + TRAJECTORIES, TEACHER_SEED_START + TRAJECTORIES + 100)
    assert record["seeds"] == [held.start, held.stop]
    final = _replay(den, art, set(art.corrected), held)[-1]
    target = _teacher(den, art, cache)[-1, TRAJECTORIES:]
    kept = float(loss_value(art.loss, (final - target).reshape(len(held), -1)))
    assert math.isclose(kept, record["kept_loss"], rel_tol=1e-9)
    assert art.holdout_gain == pytest.approx(1 - record["kept_loss"] / record["base"])


def test_gate_that_drops_everything_samples_like_the_base_solver(digits, cache):
    den = digits[0]
    art = pas.fit(den, "ddim", 5, trajectories=200, dtype=F64, cache_dir=cache, progress=False,
                  tau_first=0.0, tau=1e9)
    assert any(s.accepted for s in art.search)
    assert art.corrected == {} and art.n_params == 0 and art.holdout_gain == 0.0
    assert len(art.validation["candidates"]) >= 2
    latents, _ = solvers.latents_for_seeds(range(64), den.shape, dtype=F64)
    plain = solvers.sample(den, latents, "ddim", 5)
    assert torch.equal(solvers.sample(den, latents, "ddim", 5, correction=art.correction()), plain)


def test_exact_fit_beats_adam_on_every_searched_step(digits, cache, monkeypatch):
    """On the very data of each step of a fit, the exact optimiser's loss <= Adam's (lr 0.01,
    1000 epochs, early stop 10)."""
    pairs = []
    exact = pas.adaptive.fit_coords

    def both(data, dt, start, settings):
        coords, epochs = exact(data, dt, start, settings)
        adam, _ = adam_coords(data, dt, start, FitSettings(settings.loss))
        offset, basis = (torch.cat(parts, dim) for parts, dim in zip(zip(*data.chunks()), (0, 1)))
        pairs.append([
            float(loss_value(settings.loss, offset + dt * torch.einsum("qsd,q->sd", basis, c)))
            for c in (coords, adam)
        ])
        return coords, epochs

    monkeypatch.setattr(pas.adaptive, "fit_coords", both)
    for loss in ("L1", "pseudo_huber"):
        pas.fit(digits[0], "ipndm", 6, trajectories=300, dtype=F64, cache_dir=cache,
                progress=False, validate=False, loss=loss)
    assert len(pairs) == 12
    assert all(fitted <= reference for fitted, reference in pairs), pairs


def _rmse(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).square().mean().sqrt())


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["polynomial", "logsnr"])
def test_gated_pas_is_never_worse_than_the_base_solver(digits, tmp_path, schedule):
    """Final-state RMSE to a Heun-200 solution of fresh seeds, PAS vs base, never > 1% worse."""
    den = digits[0]
    cells = [(solver, nfe) for solver in ("ddim", "ipndm", "dpmpp", "unipc") for nfe in (4, 5, 8)]
    settings = {"trajectories": 500, "dtype": F64, "cache_dir": tmp_path, "progress": False}
    requests = [pas.student_request(den, s, n, schedule=schedule) for s, n in cells]
    teacher_states(den, requests, seeds=pas.teacher_seeds(500), dtype=F64, cache_dir=tmp_path,
                   progress=False)
    latents, _ = solvers.latents_for_seeds(range(50_000, 51_000), den.shape, dtype=F64)
    reference = solvers.sample(den, latents, "heun", 200, "polynomial")
    worse = []
    for solver, nfe in cells:
        art = pas.fit(den, solver, nfe, schedule=schedule, **settings)
        base = _rmse(solvers.sample(den, latents, solver, nfe, schedule), reference)
        fitted = _rmse(
            solvers.sample(den, latents, solver, nfe, schedule, correction=art.correction()),
            reference,
        )
        if fitted > 1.01 * base:
            worse.append((solver, nfe, base, fitted, sorted(art.corrected)))
    assert not worse


class CountingDenoiser:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        for name in ("name", "shape", "sigma_min", "sigma_max", "label_dim"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        return self.inner(x, sigma, class_labels)


def test_second_fit_makes_no_teacher_calls(digits, tmp_path):
    den = CountingDenoiser(digits[0])
    settings = {
        "trajectories": 40,
        "teacher_nfe": 20,
        "batch_size": 16,
        "validate": False,
        "dtype": F64,
        "cache_dir": tmp_path,
        "progress": False,
    }
    first = pas.fit(den, "ddim", 4, **settings)
    # M = ceil(20 / 8) - 1 = 2, so K_T = 13 teacher points: 24 Heun calls per chunk of 16 seeds.
    assert inserted_points(4, 20) == 2
    chunks = 3
    assert den.calls == chunks * (24 + 4) and not first.teacher["cached"]
    assert first.teacher["actual_nfe"] == 24
    den.calls = 0
    second = pas.fit(den, "ipndm", 4, **settings)
    assert den.calls == chunks * 4 and second.teacher["cached"]
    assert second.teacher["generation_seconds"] == first.teacher["generation_seconds"]
    assert len(list((tmp_path / "teacher").iterdir())) == 1
    # Fewer seeds from the same start are served by the stored solve too.
    den.calls = 0
    pas.fit(den, "ddim", 4, **{**settings, "trajectories": 20})
    assert den.calls == 2 * 4


def _heun_states(den, grid: torch.Tensor, times: torch.Tensor, seeds: range) -> torch.Tensor:
    latents, _ = solvers.latents_for_seeds(seeds, den.shape, dtype=F64)
    _, traj = solvers.sample(den, latents, "heun", 2 * (len(grid) - 1), grid,
                             return_trajectory=True)
    index = [int(torch.isclose(grid, t, rtol=1e-12, atol=0).nonzero()) for t in times]
    return traj[index]


def test_one_teacher_solve_serves_a_grid_of_nfes_and_schedules(digits, tmp_path):
    """Two NFEs x two schedules: the teacher model is called once per step of one shared grid,
    every fit then reads it (no more teacher calls), and its states are as accurate as each
    fit's own teacher would give (checked against Heun with ~1000 steps)."""
    den = CountingDenoiser(digits[0])
    seeds = range(TEACHER_SEED_START, TEACHER_SEED_START + 40)
    cells = [(nfe, schedule) for nfe in (4, 6) for schedule in ("polynomial", "logsnr")]
    requests = [pas.student_request(den, "ddim", n, schedule=s, teacher_nfe=40) for n, s in cells]
    shared = teacher_states(den, requests, seeds=seeds, dtype=F64, batch_size=16,
                            cache_dir=tmp_path, progress=False)
    steps = len(shared.grid) - 1
    assert den.calls == 3 * 2 * steps
    assert steps < sum(len(r.fine) - 1 for r in requests)
    den.calls = 0
    for nfe, schedule in cells:
        art = pas.fit(den, "ddim", nfe, schedule=schedule, trajectories=40, teacher_nfe=40,
                      validate=False, batch_size=16, dtype=F64, cache_dir=tmp_path,
                      progress=False)
        assert art.teacher["cached"] and art.teacher["actual_nfe"] == 2 * steps
    assert den.calls == 3 * sum(nfe for nfe, _ in cells)
    for request in requests:
        exact = _heun_states(
            den, teacher_grid(shared_grid([request]), 1000 // len(request.fine), None, (0, 0)),
            request.times, seeds,
        )
        own = _heun_states(den, request.fine, request.times, seeds)
        error_shared = (shared.states(request.times) - exact).abs().max()
        assert error_shared <= (own - exact).abs().max() * 1.0001


def test_shared_grid_keeps_every_time_and_no_longer_step():
    def request(nfe, schedule):
        times = solvers.get_schedule(schedule, nfe + 1, 0.002, 80.0)
        fine = teacher_grid(times, inserted_points(nfe, 100), schedule, (0.002, 80.0))
        return TeacherRequest(times, fine)

    alone = request(5, "polynomial")
    assert torch.equal(shared_grid([alone]), alone.fine)
    requests = [request(n, s) for n in (4, 5, 6, 8, 10) for s in ("polynomial", "logsnr")]
    grid = shared_grid(requests)
    assert (grid[1:] < grid[:-1]).all()
    for r in requests:
        assert torch.isclose(r.times[:, None], grid[None], rtol=1e-12, atol=0).any(dim=1).all()
        # Every step of the shared grid is no longer than r's own step where they overlap.
        for high, low in itertools.pairwise(grid):
            overlap = (r.fine[:-1] > low) & (r.fine[1:] < high)
            assert ((r.fine[:-1] - r.fine[1:])[overlap] >= (high - low) * (1 - 1e-12)).all()
    assert len(grid) - 1 < sum(len(r.fine) - 1 for r in requests) / 3


def test_teacher_grid_embeds_the_student_schedule():
    times = solvers.get_schedule("polynomial", 11, 0.002, 80.0)
    fine = teacher_grid(times, 4, "polynomial", (0.002, 80.0))
    assert len(fine) == 51 and torch.equal(fine[::5], times)
    assert torch.allclose(fine, solvers.get_schedule("polynomial", 51, 0.002, 80.0), rtol=1e-14)
    explicit = teacher_grid(times, 1, None, (0.002, 80.0))
    assert torch.equal(explicit[::2], times)
    assert torch.allclose(explicit[1::2], (times[:-1] * times[1:]).sqrt(), rtol=1e-14)
    assert [inserted_points(n, 100) for n in (3, 4, 5, 6, 10)] == [16, 12, 9, 8, 4]


def test_fit_rejects_bad_settings(digits):
    den = digits[0]
    with pytest.raises(ValueError, match="PAS cannot correct heun"):
        pas.fit(den, "heun", 10)
    with pytest.raises(ValueError, match="PAS cannot correct dpm2"):
        pas.fit(den, "dpm2", 10)
    with pytest.raises(ValueError, match="unknown PAS loss"):
        pas.fit(den, "ddim", 10, loss="lpips")
    with pytest.raises(ValueError, match="unknown PAS optimizer"):
        pas.fit(den, "ddim", 10, optimizer="sgd")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        pas.fit(den, "ddim", 10, k=0)
    with pytest.raises(ValueError, match="holdout must be >= 0"):
        pas.fit(den, "ddim", 10, holdout=-0.1)
    with pytest.raises(ValueError, match="does not take option"):
        pas.fit(den, "ddim", 10, variant="bh1")
    with pytest.raises(ValueError, match="needs 6 times"):
        pas.fit(den, "ddim", 5, schedule=[80.0, 1.0, 0.002])
