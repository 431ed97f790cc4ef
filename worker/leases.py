"""A worker's lease on the checks it claimed: renewed from a thread every third of ``lease_s`` while the chunk is
worked on, so the sweeper can tell a slow worker (lease renewed, left alone) from a dead one (lease lapsed,
re-queued within ``lease_s`` + ``sweep_interval_s``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from backend.checks.service import renew_leases
from backend.settings import Settings
from backend.storage.db import new_session

log = logging.getLogger("fakewatch.worker")


def _renew_until(stop: threading.Event, check_ids: list[str], settings: Settings) -> None:
    while not stop.wait(settings.lease_s / 3):
        session = new_session(settings)
        try:
            if renew_leases(session, check_ids, settings.lease_s) == 0:
                return  # every check of the chunk is final: nothing left to hold
        except Exception:  # a missed renewal is retried; the lease outlasts two of them
            log.warning("could not renew the lease on %d checks; retrying", len(check_ids), exc_info=True)
            session.rollback()
        finally:
            session.close()


@contextmanager
def holding_leases(check_ids: Sequence[str], settings: Settings) -> Iterator[None]:
    """Keep the lease on these claimed checks alive for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=_renew_until, args=(stop, list(check_ids), settings),
                              name="fakewatch-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=settings.lease_s)
