"""A worker's lease on the checks it claimed: renewed from a thread every third of ``lease_s`` while the chunk is
worked on, so the sweeper can tell a slow worker (lease renewed, left alone) from a dead one (lease lapsed,
re-queued within ``lease_s`` + ``sweep_interval_s``).

A pool process that dies under a live worker (SIGKILL, the OOM killer) is known dead to that worker's main process
at once: :class:`PoolWatch` names it, and the sweeper ends its leases at its next pass instead of waiting for them
to run out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from backend.checks.service import renew_leases
from backend.settings import Settings
from backend.storage.db import new_session
from worker.detectors import process_name

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


def live_children() -> set[int] | None:
    """The pids of this process's children that still run (a zombie, dead but not yet reaped, does not count), from
    ``/proc``; None where ``/proc`` cannot tell (not Linux, or a kernel without ``/proc/PID/task/TID/children``)."""
    try:
        pids = {int(pid) for task in Path("/proc/self/task").iterdir()
                for pid in (task / "children").read_text().split()}
    except (OSError, ValueError):
        return None
    return {pid for pid in pids if not _is_zombie(pid)}


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True  # gone between the two reads


class PoolWatch:
    """Which of this worker's pool processes exited since the last look, named as they signed their claims
    (``host:pid``, :func:`worker.detectors.process_name`).

    Only processes this worker's main process started are judged: a pid of another host or another container's pid
    namespace proves nothing about that process, and its claims are left to their lease."""

    def __init__(self) -> None:
        self._known: set[int] = set()

    def exited(self) -> list[str]:
        live = live_children()
        if live is None:
            return []
        gone = self._known - live
        self._known = live
        return [process_name(pid) for pid in sorted(gone)]
