"""``python -m pas``: fit writes an artifact, show summarises it, bad input -> one line, exit 2."""

import pytest

from pas import PASArtifact
from pas.__main__ import main

DDIM_FIT = ["fit", "--dataset", "digits", "--solver", "ddim", "--nfe", "5", "--out", "x.json"]


def test_fit_then_show(tmp_path, capsys):
    out = tmp_path / "art.json"
    argv = [
        "fit",
        "--dataset",
        "digits",
        "--solver",
        "dpmpp",
        "--nfe",
        "4",
        "--out",
        str(out),
        "--trajectories",
        "64",
        "--teacher-nfe",
        "16",
        "--epochs",
        "30",
        "--k",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--dtype",
        "float64",
        "--chunk",
        "16",
        "--quiet",
    ]
    assert main(argv) == 0
    art = PASArtifact.load(out)
    assert (art.solver, art.nfe, art.k, art.dataset, art.dtype) == (
        "dpmpp",
        4,
        3,
        "digits",
        "float64",
    )
    assert art.options["thresholding"] is False  # off by default for the mixtures
    assert art.teacher["trajectories"] == 64 and len(art.search) == 4
    assert art.optimizer == "exact" and art.validation["seeds"] == [10_000_064, 10_000_164]
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"n_params {art.n_params}" in shown and "loss before" in shown
    assert "held out (seeds 10000064..10000163): base" in shown
    assert art.chunk == 16 and "memory: chunks of 16 trajectories, host RssAnon peak" in shown
    candidates = len(art.validation["candidates"])
    # header lines, step table head and rows, gate table head and rows
    assert len(shown.splitlines()) == 8 + 2 + 4 + 2 + candidates


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "missing.json"], "No such file"),
        (
            ["fit", "--dataset", "nope", "--solver", "ddim", "--nfe", "5", "--out", "x.json"],
            "unknown dataset",
        ),
        (
            ["fit", "--dataset", "digits", "--solver", "heun", "--nfe", "10", "--out", "x.json"],
            "cannot correct heun",
        ),
        (
            ["fit", "--dataset", "digits", "--solver", "ddim", "--nfe", "x", "--out", "x.json"],
            "invalid int",
        ),
        (
            [*DDIM_FIT, "--thresholding"],
            "ddim has no thresholding",
        ),
        (
            [*DDIM_FIT, "--loss", "lpips"],
            "unknown PAS loss",
        ),
        ([*DDIM_FIT, "--chunk", "0"], "chunk must be an integer >= 1"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
