"""The sweeper: a thread in each scoring worker's main process that re-queues checks nobody finished.

Several workers may sweep at once; each re-queue is a conditional update, so the worst case is a check sent
twice, which the idempotent task absorbs."""

from __future__ import annotations

import logging
import threading

from backend.checks import sweep_stuck_checks
from backend.db import session_scope
from backend.queue import enqueue_scoring
from backend.settings import get_settings

log = logging.getLogger("fakewatch.sweeper")


def sweep_once() -> int:
    with session_scope() as session:
        ids = sweep_stuck_checks(session)
    if ids:
        log.warning("re-queued %d checks left unfinished past %.0f s", len(ids), get_settings().stuck_after_s)
        enqueue_scoring(ids)
    return len(ids)


def _loop(stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        try:
            sweep_once()
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the sweeper
            log.exception("sweep failed; retrying in %.0f s", interval_s)


def start_sweeper(stop: threading.Event) -> threading.Thread:
    interval = get_settings().sweep_interval_s
    thread = threading.Thread(target=_loop, args=(stop, interval), name="fakewatch-sweeper", daemon=True)
    thread.start()
    log.info("sweeper started: every %.0f s, re-queues checks stuck past %.0f s", interval, get_settings().stuck_after_s)
    return thread
