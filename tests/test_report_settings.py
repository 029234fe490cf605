"""Settings in the report: the settings table shows those in effect (Adam's knobs only for Adam
fits, the held-out share only with the gate, rho only on schedules that use it, precision only
for networks), and a method label names the one option that differs."""
from __future__ import annotations

import pandas as pd
from store_factory import make_row

from report.tables import gain_table, settings_table, with_labels

PAS = {"k": 4, "loss": "L1", "optimizer": "exact", "lr": 0.01, "epochs": 1000, "early_stop": 10,
       "validate": True, "holdout": 0.1, "tau": 1e-4}


def settings(rows: list[dict]) -> dict[str, list[str]]:
    table = settings_table(with_labels(pd.DataFrame(rows))).text
    return {name: list(values) for name, values in table.iterrows()}


def pair(solver: str, pas_settings: dict, **fields) -> list[dict]:
    return [make_row("digits", solver, 6, pas, pas_settings=pas_settings if pas else None, **fields)
            for pas in (False, True)]


def test_exact_fits_have_no_adam_rows_and_adam_fits_have_them():
    exact = settings(pair("ddim", PAS))
    assert not {"PAS lr", "PAS epochs", "PAS early_stop"} & set(exact)
    assert exact["PAS optimizer"] == ["exact"] and exact["PAS holdout"] == ["0.1"]
    adam = settings(pair("ddim", PAS | {"optimizer": "adam"}))
    assert (adam["PAS lr"], adam["PAS epochs"], adam["PAS early_stop"]) == (["0.01"], ["1000"], ["10"])
    # One Adam family beside an exact one: the rows exist, blank for the exact fit.
    both = settings(pair("ddim", PAS) + pair("ipndm", PAS | {"optimizer": "adam"}))
    assert both["PAS epochs"] == ["", "1000"]


def test_holdout_only_with_the_gate_and_rho_only_where_the_schedule_uses_it():
    ungated = settings(pair("ddim", PAS | {"validate": False}))
    assert "PAS holdout" not in ungated and ungated["PAS validate"] == ["False"]
    rows = (pair("ddim", PAS, options={"rho": 7.0})
            + pair("ipndm", PAS, schedule="logsnr", options={"rho": 7.0, "order": 3}))
    assert settings(rows)["rho"] == ["7", ""]


def test_precision_only_where_a_network_runs():
    assert "precision" not in settings(pair("ddim", PAS))  # FD: an analytic dataset
    fid = settings(pair("ddim", PAS, metric="fid", precision="fp16"))
    assert fid["precision"] == ["fp16"]


def test_one_solver_at_two_orders_gets_two_short_labels_in_one_table():
    """The paper grid's iPNDM at orders 3 (PAS's run.sh) and 4 (the toolbox's tables)."""
    rows = [make_row("cifar10", "ipndm", 4, pas, order=order, options={"order": order, "rho": 7.0},
                     pas_settings={"k": 4} if pas else None)
            for order in (3, 4) for pas in (False, True)]
    cells = with_labels(pd.DataFrame(rows))
    assert list(cells["method"]) == ["iPNDM (order=3)", "iPNDM (order=3) + PAS",
                                     "iPNDM (order=4)", "iPNDM (order=4) + PAS"]
    assert list(gain_table(cells).text.index) == ["iPNDM (order=3) + PAS", "iPNDM (order=4) + PAS"]
