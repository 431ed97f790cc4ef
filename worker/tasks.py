"""Celery tasks. Thin: they take ids and call the same service code as the API."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from backend.queue import SCORE_TASK, TRAIN_TASK


@shared_task(name=SCORE_TASK)  # late ack, reject on worker loss: celery_config sets them for every task
def score_checks(check_ids: list[str]) -> dict[str, int]:
    from worker.scoring import score_checks as run

    return run(check_ids)


@shared_task(name=TRAIN_TASK)  # acknowledged on receipt, long time limits: see celery_config's task_annotations
def train_model(run_id: str) -> dict[str, Any]:
    from worker.training import train_model as run

    return run(run_id)
