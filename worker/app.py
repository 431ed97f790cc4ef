"""The worker's Celery app: the same configuration the API sends with, plus the task modules.

Per-process resources (database engine, the loaded model) are created after the fork, in
``worker_process_init``, never in the parent."""

from __future__ import annotations

import logging
import threading

from celery.signals import celeryd_init, worker_process_init, worker_ready, worker_shutdown

from backend.db import reset_engines
from backend.queue import SCORING_QUEUE, make_celery

log = logging.getLogger("fakewatch.worker")

celery_app = make_celery()

import worker.tasks  # noqa: E402,F401 - registers the tasks on celery_app

_sweeper_stop = threading.Event()


_serves_scoring = True


@celeryd_init.connect
def _note_queues(options: dict[str, object] | None = None, **_kwargs: object) -> None:
    """Remember, before the pool forks, whether this worker scores (a training-only worker needs no model)."""
    global _serves_scoring
    queues = (options or {}).get("queues")
    if queues:
        names = queues.split(",") if isinstance(queues, str) else list(queues)  # type: ignore[arg-type]
        _serves_scoring = SCORING_QUEUE in names


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    reset_engines()
    if _serves_scoring:
        from worker.detectors import warm_up

        warm_up()


@worker_ready.connect
def _start_sweeper(sender: object = None, **_kwargs: object) -> None:
    # Only workers that serve the scoring queue sweep; a training-only worker has nothing to re-queue.
    if not _serves_scoring:
        return
    from worker.sweeper import start_sweeper

    start_sweeper(_sweeper_stop)


@worker_shutdown.connect
def _stop_sweeper(**_kwargs: object) -> None:
    _sweeper_stop.set()
