"""Sending work to the workers: the Celery configuration both sides use, and sending tasks by name.

The broker carries only ids; the database holds their state. Task code lives in worker/, and this module never
imports it (so the API process never loads TensorFlow). Named for what it does: a module called ``queue`` would
shadow the standard library's."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from backend.checks.broker import broker_connection_url
from backend.checks.metrics import REQUEST_ID
from backend.settings import Settings

SCORE_TASK = "fakewatch.score_checks"
TRAIN_TASK = "fakewatch.train_model"
DELIVER_TASK = "fakewatch.deliver_callback"
SCORING_QUEUE = "scoring"
TRAINING_QUEUE = "training"
# Callbacks have a queue (and a worker) of their own: a slow or failing receiver never holds up scoring.
CALLBACKS_QUEUE = "callbacks"


def celery_config(settings: Settings) -> dict[str, Any]:
    url, transport = broker_connection_url(settings.broker)
    config: dict[str, Any] = {
        "broker_url": url,
        "task_default_queue": SCORING_QUEUE,
        "task_routes": {SCORE_TASK: {"queue": SCORING_QUEUE}, TRAIN_TASK: {"queue": TRAINING_QUEUE},
                        DELIVER_TASK: {"queue": CALLBACKS_QUEUE}},
        # A message is acknowledged only once its task finished, and comes back if the worker process dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # A training run is acknowledged on receipt (it is not replayed after a crash: the run is marked failed as
        # stale instead), and has its own, much longer, time limits.
        "task_annotations": {TRAIN_TASK: {"acks_late": False,
                                          "soft_time_limit": settings.training_time_limit_s,
                                          "time_limit": settings.training_time_limit_s + 60}},
        # Loading TensorFlow and the model in a new pool process takes seconds, longer than Celery's 4 s default.
        "worker_proc_alive_timeout": 120,
        # Verdicts live in the database; results in the broker would only be noise.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if transport:
        config["broker_transport"] = transport
        # kombu polls an idle virtual queue once a second; a single check must not wait that long for a worker (a
        # worker on this machine is woken by each message, and polls as a fallback: backend/checks/broker.py).
        config["broker_transport_options"] = {"polling_interval": settings.broker_poll_interval_s,
                                              "idle_polling_interval": settings.broker_idle_poll_interval_s}
    if settings.broker_is_redis:
        # Unacknowledged messages come back after this long; the sweeper usually acts first.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


class FakewatchCelery(Celery):
    """A Celery app that carries the settings it was made from, so a worker's tasks and signal handlers get the
    settings of the worker's start-up (``self.app.settings`` in a bound task)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("fakewatch")
        self.settings = settings
        self.conf.update(celery_config(settings))


@lru_cache(maxsize=8)
def sender(settings: Settings) -> FakewatchCelery:
    """The app this process sends tasks with, one per settings value (a connection pool each)."""
    return FakewatchCelery(settings)


# Many ids get larger chunks so that sending stays fast on the embedded broker, where every message is a database
# transaction: 10,000 ids make 159 messages of 63, not 313 of 32.
MAX_MESSAGES_PER_SEND = 160


def message_chunk_size(count: int, score_batch_size: int) -> int:
    """Ids per message for a send of ``count`` ids: the scoring batch size, raised so a send stays under
    ``MAX_MESSAGES_PER_SEND`` messages."""
    return max(score_batch_size, -(-count // MAX_MESSAGES_PER_SEND))


def enqueue_scoring(settings: Settings, check_ids: Sequence[str]) -> None:
    """Send check ids to the scoring workers, several per message so a worker scores them as one batch. If the
    broker fails here the checks stay queued in the database and the sweeper sends them again."""
    ids = list(check_ids)
    size = message_chunk_size(len(ids), settings.score_batch_size)
    for start in range(0, len(ids), size):
        # The request id travels in the message's headers, so the worker's log lines carry it too.
        sender(settings).send_task(SCORE_TASK, args=[ids[start : start + size]], queue=SCORING_QUEUE,
                                   headers={"request_id": REQUEST_ID.get()})


def enqueue_training(settings: Settings, run_id: str) -> None:
    sender(settings).send_task(TRAIN_TASK, args=[run_id], queue=TRAINING_QUEUE)


def enqueue_deliveries(settings: Settings, delivery_ids: Sequence[int]) -> None:
    """Send callback deliveries to the callbacks worker. A lost message is sent again by the sweeper once the
    delivery's lease (``next_attempt_at``) has passed."""
    for delivery_id in delivery_ids:
        sender(settings).send_task(DELIVER_TASK, args=[delivery_id], queue=CALLBACKS_QUEUE)


def broker_reachable(settings: Settings) -> str | None:
    """None when the broker answers, else why not."""
    try:
        with sender(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", and its text is the reason
        return f"broker unreachable: {error}"
    return None
