"""End to end on `digits` (float64): PAS improves the data-space Frechet distance, the search
follows the same recursion as sampling, and the teacher is cached."""

import math

import pytest
import torch

import pas
import solvers
from bench.datasets import get_dataset
from bench.metrics import frechet_distance
from pas.search import loss_value
from pas.teacher import TEACHER_SEED_START, inserted_points, teacher_grid, teacher_trajectories

F64 = torch.float64
TRAJECTORIES = 1000
EVAL_SEEDS = range(2000)
OPTIONS = {
    "ddim": {},
    "ipndm": {},
    "deis": {},  # tAB order 4 on the toolbox's time_uniform rho = 2 (its own teacher)
    "dpmpp": {"thresholding": True},
    "unipc": {"thresholding": True},
}


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
                den,
                solver,
                nfe,
                trajectories=TRAJECTORIES,
                dtype=F64,
                cache_dir=cache,
                progress=False,
                **OPTIONS[solver],
            )
        return made[solver, nfe]

    return get


def _fd(digits, solver: str, nfe: int, correction=None) -> float:
    den, mean, cov = digits
    latents, _ = solvers.latents_for_seeds(EVAL_SEEDS, den.shape, dtype=F64)
    x = solvers.sample(den, latents, solver, nfe, correction=correction, **OPTIONS[solver])
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


def test_search_follows_the_sampling_recursion(digits, fitted, cache):
    """Decision 0.5: the loss recorded for each step is that of the state sampling reaches."""
    den = digits[0]
    art = fitted("ddim", 5)
    seeds = range(TEACHER_SEED_START, TEACHER_SEED_START + TRAJECTORIES)
    teacher = teacher_trajectories(
        den,
        torch.tensor(art.times, dtype=F64),
        schedule=art.schedule,
        rho=art.rho,
        seeds=seeds,
        dtype=F64,
        cache_dir=cache,
        progress=False,
    )
    assert teacher.cached
    latents, _ = solvers.latents_for_seeds(seeds, den.shape, dtype=F64)
    _, traj = solvers.sample(
        den, latents, "ddim", 5, correction=art.correction(), return_trajectory=True
    )
    assert [s.index for s in art.search] == list(range(5))
    for step in art.search:
        residual = (traj[step.index + 1] - teacher.states[step.index + 1]).reshape(TRAJECTORIES, -1)
        reached = float(loss_value(art.loss, residual))
        expected = step.loss_after if step.accepted else step.loss_before
        assert math.isclose(reached, expected, rel_tol=1e-9), step
        assert step.accepted == (step.index in art.corrected)
        if step.accepted:
            assert len(art.corrected[step.index]) == step.n_coords
    # With use_xT the centred buffer has rank i+1 at step i: 2, 3, then k = 4 coordinates.
    assert [s.n_coords for s in art.search] == [2, 3, 4, 4, 4]


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
        "epochs": 20,
        "dtype": F64,
        "cache_dir": tmp_path,
        "progress": False,
    }
    first = pas.fit(den, "ddim", 4, **settings)
    # M = ceil(20 / 8) - 1 = 2, so K_T = 13 teacher points: 24 Heun calls per chunk of 16 seeds.
    assert inserted_points(4, 20) == 2
    chunks = 3
    assert den.calls == chunks * (24 + 4) and not first.teacher["cached"]
    den.calls = 0
    second = pas.fit(den, "ipndm", 4, **settings)
    assert den.calls == chunks * 4 and second.teacher["cached"]
    assert second.teacher_seconds < first.teacher_seconds
    assert second.teacher["generation_seconds"] == first.teacher_seconds
    assert len(list((tmp_path / "teacher").iterdir())) == 1


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
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        pas.fit(den, "ddim", 10, k=0)
    with pytest.raises(ValueError, match="does not take option"):
        pas.fit(den, "ddim", 10, variant="bh1")
    with pytest.raises(ValueError, match="needs 6 times"):
        pas.fit(den, "ddim", 5, schedule=[80.0, 1.0, 0.002])
