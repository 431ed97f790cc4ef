"""The arrows between the packages run one way (docs/architecture.md, "Packages and what they may import"): core at
the bottom, backend and models each on core only, the worker and the console above the backend, the ``fakewatch``
command on top. Read from the source, so an import inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"core", "backend", "models", "worker", "admin", "fakewatch", "testbed", "tests", "benchmarks"}
# What each package may import from ours, besides itself.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "backend": {"core"},  # never models/: the API's process never loads TensorFlow
    "worker": {"core", "backend", "models"},
    "admin": {"core", "backend"},
    "fakewatch": {"core", "backend", "models", "worker", "admin"},
    # The helpers tests and benchmarks share: benchmarks never import tests/, and the helpers import neither.
    "testbed": {"core", "backend"},
    "benchmarks": {"core", "backend", "models", "worker", "testbed"},
}


def imported_packages(path: Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages & FIRST_PARTY


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    crossings = {
        str(path.relative_to(ROOT)): sorted(found - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
        if (found := imported_packages(path)) - ALLOWED[package] - {package}
    }
    assert crossings == {}, f"{package}/ imports layers it must not: {crossings}"



# Inside backend/: what each package (or top-level module) may import from the others, as its ``__init__``
# docstring says. ``api`` is the top of the backend and may import everything.
BACKEND = ROOT / "backend"
BACKEND_ALLOWED = {
    "settings": {"fetching"},
    "storage": {"settings"},
    "fetching": {"settings"},
    "provenance": {"settings"},
    "identity": {"settings", "storage"},
    "matching": {"settings", "storage"},
    "training": {"settings", "checks", "identity", "storage"},
    "checks": {"settings", "batches", "fetching", "identity", "matching", "provenance", "storage", "training"},
    "batches": {"settings", "checks", "fetching", "identity", "storage"},
    "moderation": {"settings", "checks", "identity", "matching", "storage"},
    "shapes": {"settings", "checks", "storage"},
    "delivery": {"settings", "shapes", "batches", "checks", "fetching", "identity", "storage"},
    "api": {path.stem if path.is_file() else path.name for path in BACKEND.iterdir()
            if path.name not in {"__init__.py", "__pycache__"}},
    "wsgi": {"api"},
    "gunicorn_config": set(),
}


def backend_units_imported(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        units |= {name.split(".")[1] for name in names if name.startswith("backend.")}
    return {unit for unit in units if unit in BACKEND_ALLOWED}


def backend_unit(path: Path) -> str:
    parts = path.relative_to(BACKEND).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_backend_package_has_a_rule() -> None:
    units = {backend_unit(path) for path in BACKEND.rglob("*.py")} - {"__init__"}
    assert units <= set(BACKEND_ALLOWED), f"give these a rule in BACKEND_ALLOWED: {sorted(units - set(BACKEND_ALLOWED))}"
    top_level_modules = sorted(path.name for path in BACKEND.glob("*.py"))
    assert len(top_level_modules) <= 8, top_level_modules


@pytest.mark.parametrize("unit", sorted(BACKEND_ALLOWED))
def test_each_backend_package_imports_only_what_its_docstring_allows(unit: str) -> None:
    paths = [path for path in BACKEND.rglob("*.py") if backend_unit(path) == unit]
    crossings = {
        str(path.relative_to(ROOT)): sorted(found - BACKEND_ALLOWED[unit] - {unit})
        for path in sorted(paths)
        if (found := backend_units_imported(path)) - BACKEND_ALLOWED[unit] - {unit}
    }
    assert crossings == {}, f"backend/{unit} imports packages it must not: {crossings}"
