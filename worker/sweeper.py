"""The sweeper: a thread in each scoring worker's main process that re-queues checks nobody finished, sends the
callback deliveries that are due (retries, lost messages), and runs retention's deletions when they are due.

Several workers may sweep at once; each re-queue is a conditional update, so the worst case is a check sent
twice, which the idempotent task absorbs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from backend.checks.handoff import resend_unsent, send_checks
from backend.checks.idempotency import forget_old_keys
from backend.checks.service import end_leases, lost_repeatedly, sweep_stuck_checks
from backend.delivery import callbacks
from backend.delivery.retention import apply_retention
from backend.settings import Settings
from backend.storage.db import session_scope
from worker.leases import PoolWatch

log = logging.getLogger("fakewatch.sweeper")


def sweep_once(settings: Settings, pool: PoolWatch | None = None) -> int:
    """One pass: send the checks the broker refused when they were accepted, then re-queue those whose worker died
    (a lapsed lease, or a pool process of this worker seen to exit: ``pool``) or whose message was lost (after a
    second loss, each in a message of its own), and forget day-old Idempotency-Keys. Returns how many were sent."""
    with session_scope(settings) as session:
        resent = resend_unsent(session, settings)
        exited = pool.exited() if pool is not None else []
        if exited and (ended := end_leases(session, exited)):
            log.warning("pool process %s exited holding %d checks: re-queued now, not when their lease runs out",
                        ", ".join(exited), ended)
        ids = sweep_stuck_checks(session, settings)
        alone = lost_repeatedly(session, ids)
        send_checks(session, settings, [check_id for check_id in ids if check_id not in alone])
        for check_id in sorted(alone):  # one message each: only a check that itself kills workers fails
            send_checks(session, settings, [check_id])
        forget_old_keys(session)
    if resent:
        log.warning("sent %d checks the broker had refused when they were accepted", resent)
    if ids:
        log.warning("re-queued %d checks whose worker stopped renewing its lease or whose message was lost", len(ids))
    return resent + len(ids)


def sweep_callbacks(settings: Settings) -> int:
    """Write deliveries a crash left out, then send the ones that are due; returns how many were sent."""
    with session_scope(settings) as session:
        written = callbacks.schedule_missing(session, settings)
        sent = callbacks.send_due(session, settings)
    return len(written) + len(sent)


def _loop(stop: threading.Event, settings: Settings) -> None:
    next_retention = time.monotonic()
    pool = PoolWatch()  # the sweeper runs in the worker's main process: its children are the pool processes
    pool.exited()
    steps: list[tuple[str, Callable[[], int]]] = [("sweep", lambda: sweep_once(settings, pool)),
                                                  ("callbacks", lambda: sweep_callbacks(settings))]
    while not stop.wait(settings.sweep_interval_s):
        for name, step in steps:
            try:
                step()
            except Exception:  # a database hiccup must not kill the sweeper
                log.exception("%s failed; retrying in %.0f s", name, settings.sweep_interval_s)
        if settings.retention_days is not None and time.monotonic() >= next_retention:
            next_retention = time.monotonic() + settings.retention_interval_s
            try:
                with session_scope(settings) as session:
                    apply_retention(session, settings)
            except Exception:  # tried again at the next interval
                log.exception("retention failed; retrying in %.0f s", settings.retention_interval_s)


def start_sweeper(stop: threading.Event, settings: Settings) -> threading.Thread:
    thread = threading.Thread(target=_loop, args=(stop, settings), name="fakewatch-sweeper", daemon=True)
    thread.start()
    log.info("sweeper started: every %.0f s, re-queues checks whose lease (%.0f s) lapsed", settings.sweep_interval_s,
             settings.lease_s)
    return thread
