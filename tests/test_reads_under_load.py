"""What keeps reads fast while a batch is scored (docs/serving.md, "Reads under load"): the limiter's in-process
counters start no thread per request yet still count and expire, and a real scoring worker's processes run at
FAKEWATCH_SCORING_NICE, their session's scheduling group too."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from apiflask import APIFlask
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from backend.api.auth import SweptMemoryStorage
from backend.settings import Settings
from testbed.stack import Stack


def test_memory_counters_count_and_expire_without_a_thread_per_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_from_string("fakewatch-memory://")
    assert isinstance(storage, SweptMemoryStorage)
    started: list[threading.Timer] = []
    start = threading.Timer.start

    def counted(timer: threading.Timer) -> None:
        started.append(timer)
        start(timer)

    monkeypatch.setattr(threading.Timer, "start", counted)
    limiter = FixedWindowRateLimiter(storage)
    limit = parse("5 per minute")
    allowed = []
    deadline = time.monotonic() + 0.1  # ten of the stock storage's 10 ms timers
    while time.monotonic() < deadline:
        allowed.append(limiter.hit(limit, "key:1"))
        time.sleep(0.002)
    assert allowed[:5] == [True] * 5 and not any(allowed[5:])
    assert len(started) <= 1, "a sweep timer was started more than once in 0.1 s"
    storage.incr("short", expiry=0.05)
    time.sleep(0.1)
    assert storage.get("short") == 0  # an expired counter reads as zero before any sweep


def test_the_api_counts_in_memory_with_the_swept_storage(app: APIFlask) -> None:
    (limiter,) = app.extensions["limiter"]
    assert isinstance(limiter.storage, SweptMemoryStorage)


def _niceness(pid: int) -> int:
    # /proc/PID/stat: the fields after the command's closing parenthesis start at field 3; niceness is field 19.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_scoring_worker_runs_below_the_api(embedded_stack: Stack) -> None:
    worker = embedded_stack.processes["worker"]
    pool = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True,
                                              check=False).stdout.split()]
    assert pool, "the scoring worker has no pool process"
    wanted = embedded_stack.settings.scoring_nice
    assert wanted == Settings.model_fields["scoring_nice"].default > 0  # the stack sets none
    assert all(_niceness(pid) == wanted for pid in pool)
    assert _niceness(embedded_stack.processes["api"].pid) == 0
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
        # The stack starts the worker in a session of its own: its group yields to the API's group.
        assert Path(f"/proc/{pool[0]}/autogroup").read_text().split()[-1] == str(wanted)
    assert f"runs at niceness {wanted}" in embedded_stack.log_text("worker")
