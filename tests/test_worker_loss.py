"""A scoring worker that loses pool processes (SIGKILL, the OOM killer) goes on scoring, and the checks the dead
process held are re-queued at its worker's next sweep (issue 24)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import select

from backend.checks.dispatch import SCORE_TASK, SCORING_QUEUE, FakewatchCelery
from backend.checks.service import claim_checks, submit_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check
from backend.training.versions import register_model
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.stack import Stack, backend_env
from worker.detectors import process_name
from worker.leases import PoolWatch
from worker.sweeper import sweep_once


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _rows(stack: Stack, ids: list[str]) -> list[Check]:
    with stack.session() as session:
        return list(session.scalars(select(Check).where(Check.id.in_(ids))))


def test_a_worker_whose_pool_processes_are_killed_mid_task_scores_every_check_afterwards(tmp_path: Path) -> None:
    """Two pool processes on the embedded broker: while one scores a chunk and the other waits for work, both are
    SIGKILLed. The worker starts two more, the chunk comes back at its next sweep, and a chunk sent afterwards is
    scored too, all within a minute. (With the blocking pool the embedded broker used to get, the waiting process
    died holding the pool's shared queue lock, and no pool process ever took a task again.)"""
    stack = Stack(kind="embedded", env=backend_env("embedded", tmp_path), data_dir=tmp_path)
    stack.run_cli("db", "upgrade")
    with stack.session() as session:
        register_model(session, SHIPPED_MODEL, activate=True)
    photos = distinct_photos(48, size=400)
    with stack.session() as session:
        ids = [submit_image(session, data, stack.settings).check.id for data in photos]
        session.commit()
    first, later = ids[:40], ids[40:]
    sender = FakewatchCelery(stack.settings)
    try:
        worker = stack.start_worker("worker", "--concurrency", "2")
        deadline = time.monotonic() + 60
        while stack.log_text("worker").count("loaded and warm") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        sender.send_task(SCORE_TASK, args=[first], queue=SCORING_QUEUE)
        while not all(row.status == "running" for row in _rows(stack, first)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert {row.status for row in _rows(stack, first)} == {"running"}, "one pool process holds the chunk"
        pool = _children(worker.pid)
        assert len(pool) == 2
        for pid in pool:
            subprocess.run(["kill", "-KILL", str(pid)], check=True)
        sender.send_task(SCORE_TASK, args=[later], queue=SCORING_QUEUE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(row.status == "done" for row in _rows(stack, ids)):
            time.sleep(0.2)
        rows = _rows(stack, ids)
        assert {row.status for row in rows} == {"done"}, stack.log_text("worker")[-3000:]
        assert all(row.attempts == 2 for row in rows if row.id in first), "the killed chunk was claimed again once"
        assert "exited holding 40 checks" in stack.log_text("worker")
    finally:
        stack.stop()


def test_the_sweep_requeues_at_once_the_checks_of_a_pool_process_seen_to_exit(database: Settings) -> None:
    """A pool process that exits holding a lease far from its end: the worker's next sweep re-queues its checks;
    a live process's checks stay with it."""
    child = subprocess.Popen(["sleep", "60"])
    pool = PoolWatch()
    try:
        assert process_name(child.pid) not in pool.exited()  # first look: known, alive
        child.send_signal(signal.SIGKILL)
        time.sleep(0.2)  # not reaped yet: a zombie counts as exited
        gone = pool.exited()
        assert process_name(child.pid) in gone
    finally:
        child.wait()
    with session_scope(database) as session:
        register_model(session, SHIPPED_MODEL, activate=True)
        dead, alive = (submit_image(session, data, database).check.id for data in distinct_photos(2, size=64))
        session.commit()
        claim_checks(session, [dead], stale_after_s=600, lease_s=600, claimed_by=process_name(child.pid))
        claim_checks(session, [alive], stale_after_s=600, lease_s=600, claimed_by=process_name())

    class Exited(PoolWatch):
        def exited(self) -> list[str]:
            return gone

    assert sweep_once(database, Exited()) == 1
    with session_scope(database) as session:
        assert session.get(Check, dead).status == "queued"  # type: ignore[union-attr]
        assert session.get(Check, alive).status == "running"  # type: ignore[union-attr]
