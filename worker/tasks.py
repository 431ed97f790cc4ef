"""Celery tasks. Thin: they take ids and call the same service code as the API."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from backend.queue import SCORE_TASK, TRAIN_TASK
from backend.settings import get_settings


@shared_task(name=SCORE_TASK, acks_late=True, reject_on_worker_lost=True)
def score_checks(check_ids: list[str]) -> dict[str, int]:
    from worker.scoring import score_checks as run

    return run(check_ids)


# Acknowledged on receipt: a training run is not replayed after a crash (the run is marked failed as stale
# instead), and the scoring tasks' short time limits do not apply to it.
@shared_task(name=TRAIN_TASK, acks_late=False, time_limit=get_settings().training_time_limit_s + 60,
             soft_time_limit=get_settings().training_time_limit_s)
def train_model(run_id: str) -> dict[str, Any]:
    from worker.training import train_model as run

    return run(run_id)
