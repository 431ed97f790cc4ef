"""What a new user sees before `fakewatch up` says where the API is: no packaging deprecation warnings from
installing it, and no TensorFlow start-up chatter from a command unless --verbose (issue 25, item 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_an_spdx_expression_the_build_backend_understands() -> None:
    """A `license = { text = ... }` table makes setuptools 77+ print about 70 lines of deprecation warnings on every
    install; the SPDX string needs setuptools 77 or later, so the build requirement says so."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    setuptools = next(Requirement(text) for text in project["build-system"]["requires"]
                      if Requirement(text).name == "setuptools")
    assert setuptools.specifier.contains(Version("77.0.0")) and not setuptools.specifier.contains(Version("76.9"))


def _import_tensorflow(verbose: bool) -> subprocess.CompletedProcess[str]:
    code = f"from models.cli import import_tensorflow; import_tensorflow(verbose={verbose}); import tensorflow"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180,
                          check=True, cwd=ROOT)


def test_tensorflow_starts_quietly_unless_verbose() -> None:
    """absl's and oneDNN's start-up lines go straight to file descriptor 2: hidden by default, shown with -v."""
    assert _import_tensorflow(verbose=False).stderr == ""
    shown = _import_tensorflow(verbose=True).stderr
    assert "absl" in shown or "oneDNN" in shown, shown
