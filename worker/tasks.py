"""Celery tasks. Thin: they take ids and call the same service code as the API, with the settings of the worker's
start-up (the app they run in carries them)."""

from __future__ import annotations

from typing import cast

from celery import Task, shared_task

from backend.checks.dispatch import DELIVER_TASK, SCORE_TASK, TRAIN_TASK, FakewatchCelery
from backend.delivery import callbacks
from backend.settings import Settings
from backend.storage.db import session_scope
from worker import scoring, training


def _app_settings(task: Task) -> Settings:
    return cast(FakewatchCelery, task.app).settings


@shared_task(name=SCORE_TASK, bind=True)  # late ack, reject on worker loss: celery_config sets them for every task
def score_checks(self: Task, check_ids: list[str]) -> dict[str, int]:
    return scoring.score_checks(check_ids, _app_settings(self))


@shared_task(name=TRAIN_TASK, bind=True)  # acknowledged on receipt, long time limits: see celery_config
def train_model(self: Task, run_id: str) -> dict[str, str]:
    return training.train_model(run_id, _app_settings(self)).to_dict()


@shared_task(name=DELIVER_TASK, bind=True)  # on the callbacks queue: its own worker, so scoring never waits on it
def deliver_callback(self: Task, delivery_id: int) -> str | None:
    with session_scope(_app_settings(self)) as session:
        status = callbacks.deliver(session, _app_settings(self), delivery_id)
    return status.value if status is not None else None
