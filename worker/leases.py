"""A worker's lease on the checks it claimed: renewed every third of ``lease_s`` while the chunk is worked on, so the
sweeper can tell a slow worker (lease renewed, left alone) from a dead one (lease lapsed, re-queued within
``lease_s`` + ``sweep_interval_s``).

One renewal thread per process (and database) renews the leases of every chunk the process holds, in one UPDATE.
A thread started and joined for each chunk cost a scoring task more than its database work on a busy machine
(starting and stopping a thread waits for the scheduler twice), for a one-image chunk scored in tens of
milliseconds, long before its first renewal is due.

A pool process that dies under a live worker (SIGKILL, the OOM killer) is known dead to that worker's main process
at once: :class:`PoolWatch` names it, and the sweeper ends its leases at its next pass instead of waiting for them
to run out."""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from backend.checks.service import renew_leases
from backend.settings import Settings
from backend.storage.db import new_session
from worker.detectors import process_name

log = logging.getLogger("fakewatch.worker")


class _Renewer:
    """The process's renewal thread for one database and lease length, and the chunks it holds now."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._held: dict[int, list[str]] = {}
        self._tokens = itertools.count()
        threading.Thread(target=self._run, name="fakewatch-lease", daemon=True).start()

    def hold(self, check_ids: Sequence[str]) -> int:
        with self._lock:
            token = next(self._tokens)
            self._held[token] = list(check_ids)
        return token

    def release(self, token: int) -> None:
        """No renewal starts for these checks from now on (one already under way may still extend them once)."""
        with self._lock:
            self._held.pop(token, None)

    def _run(self) -> None:
        stop = threading.Event()  # never set: the thread lives as long as its process
        while not stop.wait(self._settings.lease_s / 3):
            with self._lock:
                check_ids = [check_id for ids in self._held.values() for check_id in ids]
            if not check_ids:
                continue
            session = new_session(self._settings)
            try:
                renew_leases(session, check_ids, self._settings.lease_s)
            except Exception:  # a missed renewal is retried; the lease outlasts two of them
                log.warning("could not renew the lease on %d checks; retrying", len(check_ids), exc_info=True)
                session.rollback()
            finally:
                session.close()


_renewers: dict[tuple[int, str, float], _Renewer] = {}
_renewers_lock = threading.Lock()


def _renewer(settings: Settings) -> _Renewer:
    # Keyed by process id too: a forked pool process starts its own thread (threads do not survive a fork).
    key = (os.getpid(), settings.database, settings.lease_s)
    with _renewers_lock:
        if key not in _renewers:
            _renewers[key] = _Renewer(settings)
        return _renewers[key]


@contextmanager
def holding_leases(check_ids: Sequence[str], settings: Settings) -> Iterator[None]:
    """Keep the lease on these claimed checks alive for the duration of the block."""
    renewer = _renewer(settings)
    token = renewer.hold(check_ids)
    try:
        yield
    finally:
        renewer.release(token)


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
