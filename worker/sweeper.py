"""The sweeper: a thread in each scoring worker's main process that re-queues checks nobody finished.

Several workers may sweep at once; each re-queue is a conditional update, so the worst case is a check sent
twice, which the idempotent task absorbs."""

from __future__ import annotations

import logging
import threading

from backend.checks import sweep_stuck_checks
from backend.db import session_scope
from backend.dispatch import enqueue_scoring
from backend.settings import Settings

log = logging.getLogger("fakewatch.sweeper")


def sweep_once(settings: Settings) -> int:
    with session_scope(settings) as session:
        ids = sweep_stuck_checks(session, settings)
    if ids:
        log.warning("re-queued %d checks left unfinished past %.0f s", len(ids), settings.stuck_after_s)
        enqueue_scoring(settings, ids)
    return len(ids)


def _loop(stop: threading.Event, settings: Settings) -> None:
    while not stop.wait(settings.sweep_interval_s):
        try:
            sweep_once(settings)
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the sweeper
            log.exception("sweep failed; retrying in %.0f s", settings.sweep_interval_s)


def start_sweeper(stop: threading.Event, settings: Settings) -> threading.Thread:
    thread = threading.Thread(target=_loop, args=(stop, settings), name="fakewatch-sweeper", daemon=True)
    thread.start()
    log.info("sweeper started: every %.0f s, re-queues checks stuck past %.0f s", settings.sweep_interval_s,
             settings.stuck_after_s)
    return thread
