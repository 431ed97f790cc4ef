"""The worker's Celery app: the same configuration the API sends with, the task modules, and the per-process set-up.

The worker's start-up reads its settings here, once; tasks and signal handlers take them from the app
(``FakewatchCelery.settings``). Per-process resources (database engine, the loaded model) are created after the
fork, in ``worker_process_init``, never in the parent."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, cast

from celery import current_app
from celery.concurrency import get_implementation
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.nodenames import default_nodename, host_format
from prometheus_client import start_http_server
from sqlalchemy.exc import SQLAlchemyError

import worker.tasks  # noqa: F401 - registers the tasks with whichever app is current
from backend.checks.dispatch import SCORING_QUEUE, FakewatchCelery
from backend.checks.metrics import REQUEST_ID, install_structured_logs, register_state
from backend.matching.lookups import warm_index
from backend.provenance.intake import load_trust_anchors
from backend.settings import Settings
from backend.storage.db import reset_engines, session_scope
from worker.detectors import leave, start_heartbeat, warm_up
from worker.sweeper import start_sweeper

log = logging.getLogger("fakewatch.worker")
celery_app = FakewatchCelery(Settings())

_sweeper_stop = threading.Event()
_heartbeat_stop = threading.Event()
_heartbeat_started = False
_serves_scoring = True


def start_worker(queues: str, concurrency: int, pool: str, loglevel: str) -> int:
    """Run this app's worker until it stops; returns its exit code.

    Started as ``celery worker`` would start it, without going through Celery's command line (its parser imports
    every ``celery`` subcommand, prompt_toolkit included: about 0.4 s of a cold start). Without mingle, gossip and
    event heartbeats: mingle asks the other workers for revoked task ids and waits a second for their answers at
    every start (on Redis), gossip makes every worker follow every other worker's events, and heartbeat events feed
    monitors such as Flower. fakewatch revokes no task (a cancelled check is a database state), elects nothing, and
    tells a live scoring process by its row in ``scoring_workers``: none of the three does anything for it."""
    worker = celery_app.Worker(
        hostname=host_format(default_nodename(f"{queues.replace(',', '+')}@%h-{os.getpid()}")),
        queues=queues.split(","), concurrency=concurrency, pool_cls=get_implementation(pool), loglevel=loglevel,
        without_mingle=True, without_gossip=True, without_heartbeat=True)
    worker.start()
    return int(worker.exitcode or 0)


def _settings() -> Settings:
    return cast(FakewatchCelery, current_app).settings


@celeryd_init.connect
def _note_queues(options: dict[str, object] | None = None, **_kwargs: object) -> None:
    """Remember, before the pool forks, whether this worker scores (a training-only worker needs no model)."""
    global _serves_scoring
    load_trust_anchors(_settings())  # a wrong FAKEWATCH_TRUST_ANCHORS stops the worker before it takes work
    queues: Any = (options or {}).get("queues")
    if queues:
        names = queues.split(",") if isinstance(queues, str) else list(queues)
        _serves_scoring = SCORING_QUEUE in names
    if "thread" in str((options or {}).get("pool_cls", "")).lower():
        # The threads pool forks no process, so no worker_process_init: set up this one before it takes work.
        _init_process()


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    global _heartbeat_started
    reset_engines()
    if _serves_scoring:
        lower_priority(_settings())
        start_metrics(_settings())
        load_match_index(_settings())
        # Last: once the model is warm the process announces it can score (fakewatch up waits for that).
        warm_up(_settings())
        start_heartbeat(_settings(), _heartbeat_stop)
        _heartbeat_started = True


@worker_process_shutdown.connect
def _end_process(**_kwargs: object) -> None:
    if _serves_scoring:
        _heartbeat_stop.set()
        leave(_settings())


AUTOGROUP = Path("/proc/self/autogroup")
AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def lower_priority(settings: Settings) -> None:
    """Take the niceness FAKEWATCH_SCORING_NICE, so that where the API shares this machine's cores its reads run
    before a batch's next image: a batch only takes the CPU the API leaves. Set to the value, never lowered (an
    unprivileged process could not take it back).

    Linux's autogroup scheduling (on by default in most distributions' kernels) shares the CPU between sessions
    first, and by niceness only inside each: a worker in a session of its own (``fakewatch up`` and the test stack
    start each part so, as a service manager does) would weigh its niceness only against itself. So when this
    worker leads its session (this process or its pool's parent), the session's group takes the same niceness."""
    target = settings.scoring_nice
    current = os.nice(0)
    if target > current:
        os.nice(target - current)
    group = None
    if target and os.getsid(0) in (os.getpid(), os.getppid()) and _autogroup_enabled():
        try:
            group = int(AUTOGROUP.read_text().split()[-1])
            if target > group:
                AUTOGROUP.write_text(str(target))
                group = target
        except (OSError, ValueError) as error:
            log.warning("the scoring worker's session could not take niceness %d: %s", target, error)
    log.info("scoring process %d runs at niceness %d (its session's scheduling group: %s)", os.getpid(), os.nice(0),
             "left as it is" if group is None else f"niceness {group}")


def _autogroup_enabled() -> bool:
    try:
        return AUTOGROUP_ENABLED.read_text().strip() == "1"
    except OSError:
        return False


def start_metrics(settings: Settings) -> None:
    """Serve this process's metrics on FAKEWATCH_WORKER_METRICS_PORT (one scoring process per pod or host: with
    several, the first to bind the port serves it and the others only log why not)."""
    if not settings.worker_metrics_port:
        return
    register_state(settings)
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    except OSError as error:
        log.warning("worker metrics not served on port %d: %s", settings.worker_metrics_port, error)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _structured_logs(logger: logging.Logger, **_kwargs: object) -> None:
    if _settings().log_format == "json":
        install_structured_logs(logger)


@task_prerun.connect
def _take_request_id(task: Any = None, **_kwargs: object) -> None:
    """The API's request id, from the message headers (Celery puts custom headers on the request)."""
    request = getattr(task, "request", None)
    given = getattr(request, "request_id", None) or (getattr(request, "headers", None) or {}).get("request_id")
    REQUEST_ID.set(str(given) if given else "-")


def load_match_index(settings: Settings) -> None:
    """Load the near-duplicate index from the database before the first chunk, as the model is. A database that
    does not answer yet is no reason to stop: the index then loads at the first lookup."""
    try:
        with session_scope(settings) as session:
            held = warm_index(session, settings)
    except SQLAlchemyError:
        log.exception("the near-duplicate index could not be loaded at start; it loads at the first lookup")
        return
    log.info("near-duplicate index loaded: %d hashes", held)


@worker_ready.connect
def _start_sweeper(**_kwargs: object) -> None:
    # Only workers that serve the scoring queue sweep; a training-only worker has nothing to re-queue.
    if _serves_scoring:
        start_sweeper(_sweeper_stop, _settings())


@worker_shutdown.connect
def _stop_sweeper(**_kwargs: object) -> None:
    _sweeper_stop.set()
    if _serves_scoring and _heartbeat_started and not _heartbeat_stop.is_set():  # the threads pool's one process
        _end_process()
