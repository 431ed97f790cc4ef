"""Running a benchmark's script in another checkout (the landed code beside this tree): the script runs with that
tree on its PYTHONPATH and prints ``RESULT {json}`` after each stage it finishes; the last such line is its answer,
so a run that fails or times out still reports the stages it got through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "


def run_in_tree(tree: Path, script: str, args: list[str], timeout_s: float,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` (Python source) in ``tree`` with ``args`` then a fresh scratch folder as its last argument;
    its last RESULT line, with ``error`` added when it failed or ran past ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(tree)}
        try:
            done = subprocess.run([sys.executable, "-c", script, *args, scratch], cwd=tree, env=full_env,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as expired:  # keep the stages that finished
            out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            done = subprocess.CompletedProcess(expired.cmd, 124, out, f"timed out after {timeout_s} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        return {"error": done.stderr[-3000:]}
    parsed: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    if done.returncode != 0:
        parsed["error"] = done.stderr.strip()[-1500:] or str(done.returncode)
    return parsed
