"""Celery tasks. Thin: they take ids and call the same service code as the API."""

from __future__ import annotations

from celery import shared_task

from backend.queue import SCORE_TASK


@shared_task(name=SCORE_TASK, acks_late=True, reject_on_worker_lost=True)
def score_checks(check_ids: list[str]) -> dict[str, int]:
    from worker.scoring import score_checks as run

    return run(check_ids)
