"""A grid can run one solver at two settings: a [solver_options.<entry>] table with a `solver` key."""
import tomllib

import pytest

from bench.errors import UserError
from bench.grids import parse_grid
from bench.plan import build_plan

GRID = """
[grid]
datasets = ["gmm2d"]
solvers = ["ipndm", "ipndm3"]
nfe = [5]
pas = "off"
[solver_options.ipndm3]
solver = "ipndm"
order = 3
"""


def plan(text: str):
    return build_plan(parse_grid(tomllib.loads(text), "test.toml", "test"))


def test_a_second_entry_runs_the_same_solver_with_its_own_options():
    cells = plan(GRID)
    assert [(c.solver, c.options["order"]) for c in cells] == [("ipndm", 4), ("ipndm", 3)]
    assert cells[0].config_hash != cells[1].config_hash
    assert "solver" not in cells[1].options


@pytest.mark.parametrize("value,needle", [("3", "solver must be a solver name"),
                                          ('"ipndn"', "unknown solver 'ipndn'"),
                                          ('"dpmpp"\nvariant = "bh2"', "dpmpp does not take")])
def test_bad_solver_keys_are_user_errors(value, needle):
    with pytest.raises(UserError, match=needle):
        plan(GRID.replace('solver = "ipndm"', f"solver = {value}"))
