"""The arrows between the packages run one way (DESIGN.md, "Layers"): core at the bottom, backend and models each on
core only, the worker and the console above the backend, the ``fakewatch`` command on top. Read from the source,
so an import inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"core", "backend", "models", "worker", "admin", "fakewatch"}
# What each package may import from ours, besides itself.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "backend": {"core"},  # never models/: the API's process never loads TensorFlow
    "worker": {"core", "backend", "models"},
    "admin": {"core", "backend"},
    "fakewatch": {"core", "backend", "models", "worker", "admin"},
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

