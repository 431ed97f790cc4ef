"""Running a benchmark's script in another checkout (the landed code beside this tree): the script runs with that
tree on its PYTHONPATH and prints ``RESULT {json}`` after each stage it finishes; the last such line is its answer,
so a run that fails or times out still reports the stages it got through."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "
# Every process a run starts inherits this variable, with a value of its own; what is left of a run that timed out
# (the script is killed, but the API and workers it started live in sessions of their own) is found by it.
RUN_MARK = "FAKEWATCH_BENCH_RUN"


def kill_marked(value: str) -> int:
    """SIGKILL every process whose environment holds ``RUN_MARK=value``; how many."""
    needle = f"{RUN_MARK}={value}".encode()
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return killed


def run_in_tree(tree: Path, script: str, args: list[str], timeout_s: float,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` (Python source) in ``tree`` with ``args`` then a fresh scratch folder as its last argument;
    its last RESULT line, with ``error`` added when it failed or ran past ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        mark = secrets.token_hex(8)
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(tree), RUN_MARK: mark}
        try:
            done = subprocess.run([sys.executable, "-c", script, *args, scratch], cwd=tree, env=full_env,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as expired:  # keep the stages that finished
            out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            done = subprocess.CompletedProcess(expired.cmd, 124, out, f"timed out after {timeout_s} s")
        finally:
            kill_marked(mark)  # the stack a killed script started, which would otherwise run on for hours
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        return {"error": done.stderr[-3000:]}
    parsed: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    if done.returncode != 0:
        parsed["error"] = done.stderr.strip()[-1500:] or str(done.returncode)
    return parsed
