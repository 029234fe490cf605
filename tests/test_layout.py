"""Imports point one way: solvers <- pas (and its peers) <- bench; report reads stored rows only.

Read from the import statements (ast), lazy imports inside functions included, so a change that
adds an upward arrow fails here before anyone notices it in a traceback.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("solvers", "pas", "gits", "amed", "bench", "report")
# What each top-level package may import from the project (itself always).
ALLOWED = {
    "solvers": set(),
    "pas": {"solvers"},
    "gits": {"solvers"},
    "amed": {"solvers"},
    "bench": {"solvers", "pas", "gits", "amed"},
    "report": set(),
}
# bench's models and metrics are used by the runner, never the reverse; they share its two
# utility modules.
RUNNER_SHARED = {"bench.errors", "bench.downloads"}


def imported_modules(source: str, module: str) -> set[str]:
    """Dotted names of the modules that ``source`` (module ``module``, a dotted name) imports."""
    package = module.rsplit(".", 1)[0] if "." in module else module
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def project_modules() -> dict[str, str]:
    """Dotted module name -> source, for every module of the project's packages."""
    modules = {}
    for top in PROJECT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path.read_text()
    return modules


MODULES = project_modules()


def test_the_project_is_where_the_test_looks():
    for name in ("solvers.registry", "pas.adaptive", "bench.run", "bench.models.registry",
                 "bench.metrics.frechet", "report.tables"):
        assert name in MODULES


def test_the_reader_resolves_every_import_form():
    source = "import bench.run\nfrom pas import fit\nfrom .frechet import x\nfrom .. import errors"
    got = imported_modules(source, "bench.metrics.inception")
    assert {"bench.run", "pas", "pas.fit", "bench.metrics.frechet", "bench", "bench.errors"} <= got


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_upward(module):
    top = module.split(".")[0]
    allowed = ALLOWED[top] | {top}
    wrong = sorted(
        name for name in imported_modules(MODULES[module], module)
        if name.split(".")[0] in PROJECT and name.split(".")[0] not in allowed
    )
    assert not wrong, f"{module} imports {wrong}, against the direction solvers <- pas <- bench"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith(("bench.models", "bench.metrics")))
)
def test_models_and_metrics_do_not_import_the_runner(module):
    packages = {name.rsplit(".", 1)[0] for name in MODULES}
    runner = {
        name for name in MODULES
        if name.startswith("bench.") and name.count(".") == 1
        and name not in RUNNER_SHARED | packages
    }
    wrong = sorted(imported_modules(MODULES[module], module) & runner)
    assert not wrong, f"{module} imports the runner's {wrong}"
