"""A training run's life: requested (one at a time, with something to train on), handed to the training queue,
claimed by the training worker, reporting a phase and each epoch, and ended done (a candidate registered), failed
or cancelled, with the reason a person reads in the console."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from backend.checks.dispatch import enqueue_training
from backend.identity.access import Actor, owner_key_id, require, visible_or_not_found
from backend.identity.audit import EventFilters, find_events, record
from backend.settings import Settings
from backend.storage.db import get_or_not_found
from backend.storage.schema import ModelVersion, TrainingRun, new_id, utcnow
from backend.storage.store import ObjectStore
from backend.training.data import assemble_training_data
from backend.training.versions import active_version, register_model
from core.enums import ACTIVE_RUN_STATUSES, ActorKind, AuditAction, Permission, RunStatus
from core.errors import FakewatchError
from core.retraining import Comparison


def request_training(session: Session, settings: Settings, *, actor: Actor, from_scratch: bool = False,
                     epochs: int | None = None) -> TrainingRun:
    """Create a queued training run, or refuse with the reason (one at a time; something to train on)."""
    require(actor, Permission.TRAIN)
    requested_by = actor.label
    expire_stale_runs(session, settings)
    busy = current_run(session)
    if busy is not None:
        who = f" by {busy.requested_by}" if busy.requested_by else ""
        raise FakewatchError("training_busy", f"Training run {busy.id} (requested{who}) is {busy.status}: one run "
                                              "at a time. Wait for it to finish or cancel it.", 409)
    epochs = epochs or settings.training_epochs
    if not 1 <= epochs <= settings.training_max_epochs:
        raise FakewatchError("invalid_request", f"epochs must be between 1 and {settings.training_max_epochs}.")
    base = active_version(session)
    if base is None and not from_scratch:
        raise FakewatchError("no_active_model", "There is no active version to fine-tune: train from scratch.", 409)
    data = assemble_training_data(session, settings)
    if not data.base_datasets and len(data.train) < 2:
        raise FakewatchError("no_training_data", "Nothing to train on: review at least a few images (real and fake) "
                                                 "or set FAKEWATCH_TRAINING_DATASETS.", 409)
    params = {"from_scratch": from_scratch, "epochs": epochs,
              "base_version_id": None if from_scratch or base is None else base.id,
              "architecture": base.architecture if base is not None else "default", "data": data.summary()}
    run = TrainingRun(id=new_id(), status=RunStatus.QUEUED, params=params, requested_by=requested_by,
                      api_key_id=actor.id if actor.kind is ActorKind.KEY else None,
                      progress={"phase": RunStatus.QUEUED.value, "epoch": 0, "epochs": epochs, "history": []})
    # The event first: its INSERT opens the transaction, so the savepoint below nests in it. (Opened by a
    # SAVEPOINT, pysqlite's transaction would end at its RELEASE, committing the run without its event.)
    record(session, actor, AuditAction.TRAINING_START, ("training_run", run.id), None,
           {"status": RunStatus.QUEUED.value, "from_scratch": from_scratch, "epochs": epochs,
            "base_version_id": params["base_version_id"]})
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        raise FakewatchError("training_busy", "Another training run was requested at the same moment: one run at "
                                              "a time. Wait for it to finish or cancel it.", 409) from None
    return run


def start_training(session: Session, settings: Settings, *, actor: Actor, from_scratch: bool = False,
                   epochs: int | None = None) -> TrainingRun:
    """Request a run, commit it and hand it to the training queue: what the console's Retrain button does."""
    run = request_training(session, settings, actor=actor, from_scratch=from_scratch, epochs=epochs)
    session.commit()
    try:
        enqueue_training(settings, run.id)
    except Exception as error:  # any broker failure ends the run with its reason
        end_run(session, run.id, RunStatus.FAILED, f"The training queue could not be reached: {error}")
        session.commit()
        raise FakewatchError("broker_unavailable", f"The training queue could not be reached: {error}", 503) from error
    return run


def current_run(session: Session) -> TrainingRun | None:
    """The queued or running run, if any."""
    return session.scalar(select(TrainingRun).where(TrainingRun.status.in_(ACTIVE_RUN_STATUSES))
                          .order_by(TrainingRun.created_at).limit(1))


def latest_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(1))


def get_run(session: Session, run_id: str, actor: Actor | None = None) -> TrainingRun:
    """The run; ``not_found`` when ``actor`` (None: a trusted internal caller) may not read it."""
    run = get_or_not_found(session, TrainingRun, run_id, "training run")
    visible_or_not_found(actor, run.api_key_id, "training run", run_id)
    return run


def list_runs(session: Session, limit: int = 20, actor: Actor | None = None) -> list[TrainingRun]:
    # Each run's candidate is loaded with the page (RunOut shows it), not one query per run.
    query = (select(TrainingRun).options(selectinload(TrainingRun.model_version))
             .order_by(TrainingRun.created_at.desc()).limit(limit))
    if (owner := owner_key_id(actor)) is not None:
        query = query.where(TrainingRun.api_key_id == owner)
    return list(session.scalars(query))


def expire_stale_runs(session: Session, settings: Settings) -> list[str]:
    """Fail running runs whose worker stopped reporting (killed, crashed), so they do not block retraining forever."""
    cutoff = utcnow() - timedelta(seconds=settings.training_stale_after_s)
    expired = []
    for run in session.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)):
        if _last_heartbeat(run) < cutoff:
            _finish(run, RunStatus.FAILED, "The training worker stopped reporting progress (it was stopped or "
                                           "crashed). Nothing was registered; the active model is unchanged.")
            expired.append(run.id)
    return expired


def _last_heartbeat(run: TrainingRun) -> datetime:
    beat = (run.progress or {}).get("heartbeat")
    return datetime.fromisoformat(beat) if beat else (run.started_at or run.created_at)


def claim_run(session: Session, run_id: str) -> TrainingRun | None:
    """Mark a queued run running for this worker; None when it was cancelled, taken or is gone."""
    now = utcnow()
    result = session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED,
                                                       TrainingRun.cancel_requested.is_(False))
                             .values(status=RunStatus.RUNNING, started_at=now))
    won = cast(CursorResult[Any], result).rowcount
    if not won:
        return None
    run = get_run(session, run_id)
    session.refresh(run)
    run.progress = {**run.progress, "phase": "loading data", "heartbeat": now.isoformat()}
    session.flush()
    return run


def record_progress(session: Session, run_id: str, *, phase: str | None = None, epoch: int | None = None,
                    metrics: dict[str, float] | None = None) -> bool:
    """Note a phase or a finished epoch (and that the worker is alive); returns whether a cancel was requested."""
    run = get_run(session, run_id)
    progress = {**run.progress, "heartbeat": utcnow().isoformat()}
    if phase is not None:
        progress["phase"] = phase
    if epoch is not None:
        progress["epoch"] = epoch
        progress["history"] = [*progress.get("history", []), {"epoch": epoch, **(metrics or {})}]
    run.progress = progress  # a new dict, so the JSON column is written
    session.flush()
    return run.cancel_requested


def cancel_run(session: Session, run_id: str, *, actor: Actor) -> TrainingRun:
    """Cancel a queued run at once, or ask the worker to stop a running one (it stops within a batch)."""
    run = get_run(session, run_id, actor)
    require(actor, Permission.TRAIN)
    before = {"status": run.status.value, "cancel_requested": run.cancel_requested}
    if run.status == RunStatus.QUEUED:
        _finish(run, RunStatus.CANCELLED, f"Cancelled by {actor.label} before it started.")
    elif run.status == RunStatus.RUNNING:
        run.cancel_requested = True
    else:
        raise FakewatchError("not_cancellable", f"Training run {run_id} already ended ({run.status}).", 409)
    session.flush()
    record(session, actor, AuditAction.TRAINING_CANCEL, ("training_run", run.id), before,
           {"status": run.status.value, "cancel_requested": run.cancel_requested})
    return run


def cancelled_by(session: Session, run_id: str) -> str | None:
    """Who asked to cancel the run (the audit trail's latest cancel of it), as a reason names them."""
    events = find_events(session, EventFilters(actions=(AuditAction.TRAINING_CANCEL,), object_type="training_run",
                                               object_id=run_id), limit=1)
    if not events:
        return None
    event = events[0]
    return Actor(kind=event.actor_kind, name=event.actor_name, role=event.actor_role, id=event.actor_id).label


def end_run(session: Session, run_id: str, status: RunStatus, reason: str) -> TrainingRun:
    """End a run as failed or cancelled with the reason a person reads in the console."""
    run = get_run(session, run_id)
    _finish(run, status, reason)
    session.flush()
    return run


def finish_run(session: Session, run_id: str, model_path: Path, comparison: Comparison,
               store: ObjectStore | None = None) -> ModelVersion:
    """Register the trained model as a candidate (never active), its files published to ``store``, and attach the
    candidate-vs-active comparison."""
    run = get_run(session, run_id)
    version = register_model(session, model_path, activate=False, store=store)
    run.model_version_id = version.id
    run.model_version = version
    run.progress = {**run.progress, "comparison": comparison.to_dict()}
    _finish(run, RunStatus.DONE, None)
    session.flush()
    return version


def _finish(run: TrainingRun, status: RunStatus, reason: str | None) -> None:
    run.status = status
    run.error = reason
    run.finished_at = utcnow()
    run.progress = {**(run.progress or {}), "phase": status.value}
