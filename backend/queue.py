"""The Celery app as the API and the console see it: configuration and sending tasks by name.

The broker carries only check ids; the database holds their state. Task code lives in worker/, and this
module never imports it (so the API process never loads TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from backend.broker import broker_connection_url
from backend.settings import Settings, get_settings

SCORE_TASK = "fakewatch.score_checks"
TRAIN_TASK = "fakewatch.train_model"
SCORING_QUEUE = "scoring"
TRAINING_QUEUE = "training"


def celery_config(settings: Settings) -> dict[str, Any]:
    url, transport = broker_connection_url(settings.broker)
    config: dict[str, Any] = {
        "broker_url": url,
        "task_default_queue": SCORING_QUEUE,
        "task_routes": {SCORE_TASK: {"queue": SCORING_QUEUE}, TRAIN_TASK: {"queue": TRAINING_QUEUE}},
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
    if settings.broker_is_redis:
        # Unacknowledged messages come back after this long; the sweeper usually acts first.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


def make_celery(settings: Settings | None = None) -> Celery:
    app = Celery("fakewatch")
    app.conf.update(celery_config(settings or get_settings()))
    return app


@lru_cache(maxsize=1)
def sender() -> Celery:
    return make_celery()


# Many ids get larger chunks so that sending stays fast on the embedded broker, where every message is a database
# transaction: 10,000 ids make 159 messages of 63, not 313 of 32.
MAX_MESSAGES_PER_SEND = 160


def message_chunk_size(count: int) -> int:
    """Ids per message for a send of ``count`` ids: the scoring batch size, raised so a send stays under
    ``MAX_MESSAGES_PER_SEND`` messages."""
    return max(get_settings().score_batch_size, -(-count // MAX_MESSAGES_PER_SEND))


def enqueue_scoring(check_ids: Sequence[str]) -> None:
    """Send check ids to the scoring workers, several per message so a worker scores them as one batch. If the
    broker fails here the checks stay queued in the database and the sweeper sends them again."""
    ids = list(check_ids)
    size = message_chunk_size(len(ids))
    for start in range(0, len(ids), size):
        sender().send_task(SCORE_TASK, args=[ids[start : start + size]], queue=SCORING_QUEUE)


def broker_reachable() -> str | None:
    """None when the broker answers, else why not."""
    try:
        with sender().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", and its text is the reason
        return f"broker unreachable: {error}"
    return None
