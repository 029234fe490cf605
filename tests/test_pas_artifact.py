"""PASArtifact: identity when nothing is corrected, exact JSON round trip, mismatches refused."""

import json

import pytest
import torch

import solvers
from bench.models.registry import get_dataset
from pas import PASArtifact, StepSearch

F64 = torch.float64
SOLVER_OPTIONS = {
    "ddim": {},
    "ipndm": {},
    "dpmpp": {"thresholding": True},
    "unipc": {"thresholding": True},
}


def _artifact(solver: str = "ddim", nfe: int = 5, corrected=None, **changes) -> PASArtifact:
    spec = solvers.get_solver(solver)
    options = spec.resolve(SOLVER_OPTIONS[solver])
    times = solvers.get_schedule(spec.default_schedule, nfe + 1, 0.002, 80.0, rho=options["rho"])
    corrected = {} if corrected is None else corrected
    values = {
        "dataset": "digits",
        "model": "digits",
        "solver": solver,
        "nfe": nfe,
        "num_steps": nfe,
        "options": options,
        "schedule": spec.default_schedule,
        "rho": options["rho"],
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "times": times.tolist(),
        "k": 4,
        "use_xT": True,
        "corrected": corrected,
        "search": [
            StepSearch(i, 4, 0.5, 0.25 if i in corrected else 0.75, i in corrected, 12, [1.0])
            for i in range(nfe)
        ],
        "loss": "L1",
        "optimizer": "exact",
        "lr": 0.01,
        "epochs": 1000,
        "early_stop": 10,
        "tau_first": 1e-4,
        "tau": 1e-4,
        "validate": True,
        "holdout": 0.1,
        "validation": {
            "base": 0.5,
            "searched": 0.4,
            "kept": sorted(corrected),
            "kept_loss": 0.4 if corrected else 0.5,
            "candidates": [],
            "seeds": [10_000_010, 10_000_110],
        },
        "teacher": {
            "solver": "heun",
            "nfe": 100,
            "trajectories": 10,
            "seeds": [10_000_000, 10_000_010],
        },
        "fit_seconds": 1.25,
        "fit_parts": {"denoiser": 0.5, "basis": 0.25, "optimizer": 0.25, "gate": 0.25},
        "teacher_seconds": 0.5,
        "dtype": "float64",
    }
    return PASArtifact(**{**values, **changes})


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits").build(dtype=F64)


@pytest.mark.parametrize("solver", list(SOLVER_OPTIONS))
def test_no_corrected_steps_reproduces_the_base_solver(digits, solver):
    latents, _ = solvers.latents_for_seeds(range(16), digits.shape, dtype=F64)
    options = SOLVER_OPTIONS[solver]
    plain = solvers.sample(digits, latents, solver, 5, **options)
    hooked = solvers.sample(
        digits, latents, solver, 5, correction=_artifact(solver).correction(), **options
    )
    assert torch.equal(plain, hooked)


def test_corrected_step_uses_the_stored_coordinates(digits):
    """Correcting step 0 with (|d|, 0) on u_1 = d/|d| gives the base step back (to rounding)."""
    latents, _ = solvers.latents_for_seeds(range(1), digits.shape, dtype=F64)
    d0 = (latents[0] * 80 - digits(latents * 80, torch.tensor(80.0, dtype=F64))[0]) / 80
    art = _artifact(corrected={0: [float(d0.norm()), 0.0]})
    assert art.n_params == 2
    plain = solvers.sample(digits, latents, "ddim", 5)
    assert torch.allclose(
        solvers.sample(digits, latents, "ddim", 5, correction=art.correction()),
        plain,
        rtol=0,
        atol=1e-12,
    )
    doubled = _artifact(corrected={0: [2 * float(d0.norm()), 0.0]})
    assert not torch.allclose(
        solvers.sample(digits, latents, "ddim", 5, correction=doubled.correction()), plain
    )


def test_save_load_round_trip_is_exact(tmp_path):
    art = _artifact(corrected={1: [0.1 + 0.2, -1e-300, 3.0], 3: [2.0 / 3.0, 1.0, 5e-17, -7.25]})
    path = tmp_path / "sub" / "art.json"
    art.save(path)
    back = PASArtifact.load(path)
    assert back == art
    assert back.n_params == 7
    assert json.loads(path.read_text())["corrected"]["3"][0] == 2.0 / 3.0
    back.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["art.json"]


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        PASArtifact.load(bad)
    data = _artifact().to_json()
    del data["corrected"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lacks fields: corrected"):
        PASArtifact.load(bad)
    bad.write_text(json.dumps({**_artifact().to_json(), "format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        PASArtifact.load(bad)


def test_check_compatible():
    art = _artifact("dpmpp")
    art.check_compatible("dpmpp", 5, thresholding=True)
    art.check_compatible("dpmpp", 5, "logsnr", dataset="digits", thresholding=True)
    art.check_compatible(
        "dpmpp", 5, torch.tensor(art.times, dtype=torch.float32), thresholding=True
    )
    cases = [
        (("ipndm", 5), {}, "cannot be used with solver ipndm"),
        (("dpmpp", 6), {"thresholding": True}, "cannot be used at NFE 6"),
        (("dpmpp", 5, "polynomial"), {"thresholding": True}, "schedule differs"),
        (("dpmpp", 5), {"thresholding": True, "dataset": "digits32"}, "on dataset digits32"),
        (("dpmpp", 5), {}, "thresholding=True: cannot be used with thresholding=False"),
        (("dpmpp", 5), {"thresholding": True, "order": 2}, "order=3"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            art.check_compatible(*args, **kwargs)


def test_correction_refuses_a_different_step_count(digits):
    latents, _ = solvers.latents_for_seeds(range(2), digits.shape, dtype=F64)
    with pytest.raises(ValueError, match="fitted for 5 steps"):
        solvers.sample(digits, latents, "ddim", 6, correction=_artifact().correction())


def test_json_is_self_describing(tmp_path):
    """Decision 0.9: the file names everything needed to reuse and to judge it."""
    _artifact(corrected={2: [1.0, 0.5]}).save(tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    for key in (
        "dataset",
        "model",
        "solver",
        "options",
        "nfe",
        "schedule",
        "times",
        "sigma_min",
        "sigma_max",
        "k",
        "use_xT",
        "corrected",
        "search",
        "teacher",
        "loss",
        "optimizer",
        "lr",
        "epochs",
        "validate",
        "validation",
        "fit_seconds",
        "fit_parts",
        "teacher_seconds",
        "format_version",
    ):
        assert key in data, key
    assert data["corrected"] == {"2": [1.0, 0.5]}
    assert data["search"][2] == {
        "index": 2,
        "n_coords": 4,
        "loss_before": 0.5,
        "loss_after": 0.25,
        "accepted": True,
        "epochs": 12,
        "coords": [1.0],
    }
