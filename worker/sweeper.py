"""The sweeper: a thread in each scoring worker's main process that re-queues checks nobody finished.

Several workers may sweep at once; each re-queue is a conditional update, so the worst case is a check sent
twice, which the idempotent task absorbs."""

from __future__ import annotations

import logging
import threading

from backend.checks import sweep_stuck_checks
from backend.db import session_scope
from backend.delivery import resend_unsent, send_checks
from backend.idempotency import forget_old_keys
from backend.settings import Settings

log = logging.getLogger("fakewatch.sweeper")


def sweep_once(settings: Settings) -> int:
    """One pass: send the checks the broker refused when they were accepted, then re-queue those whose worker died
    (a lapsed lease) or whose message was lost, and forget day-old Idempotency-Keys. Returns how many were sent."""
    with session_scope(settings) as session:
        resent = resend_unsent(session, settings)
        ids = sweep_stuck_checks(session, settings)
        if ids:
            send_checks(session, settings, ids)
        forget_old_keys(session)
    if resent:
        log.warning("sent %d checks the broker had refused when they were accepted", resent)
    if ids:
        log.warning("re-queued %d checks whose worker stopped renewing its lease or whose message was lost", len(ids))
    return resent + len(ids)


def _loop(stop: threading.Event, settings: Settings) -> None:
    while not stop.wait(settings.sweep_interval_s):
        try:
            sweep_once(settings)
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the sweeper
            log.exception("sweep failed; retrying in %.0f s", settings.sweep_interval_s)


def start_sweeper(stop: threading.Event, settings: Settings) -> threading.Thread:
    thread = threading.Thread(target=_loop, args=(stop, settings), name="fakewatch-sweeper", daemon=True)
    thread.start()
    log.info("sweeper started: every %.0f s, re-queues checks whose lease (%.0f s) lapsed", settings.sweep_interval_s,
             settings.lease_s)
    return thread
