"""Retraining from moderators' labels: training runs, the data they train on, and promoting or rolling back the
model versions they produce.

The console, the API and the CLI call these services; the training worker (worker/training.py) does the fitting
and reports back through them. Nothing here imports TensorFlow. One run at a time: a second request is refused
with the reason. A run only ever adds a *candidate* version; what is active changes only through
:func:`promote_version` or :func:`roll_back`, each one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.errors import FakewatchError, NotFound
from backend.model_versions import activate_version, active_version
from backend.queue import TRAIN_TASK, TRAINING_QUEUE, sender
from backend.schema import Batch, Check, Image, ModelVersion, Review, TrainingRun, isoformat_z, utcnow
from backend.settings import Settings, get_settings
from backend.store import image_path
from models.metadata import SHIPPED_MODEL, metadata_path, read_metadata

log = logging.getLogger("fakewatch.training")

ACTIVE_STATUSES = ("queued", "running")
LABELS = {"real": 0, "fake": 1}
Item = tuple[Path, int]  # (image file, 0 real / 1 fake): the shape models.train takes


@dataclass
class TrainingData:
    """What a run trains on: base dataset folders, and reviewed images split into train and held-out."""

    base_datasets: list[Path] = field(default_factory=list)
    train: list[Item] = field(default_factory=list)
    heldout: list[Item] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"base_datasets": [str(path) for path in self.base_datasets],
                "reviewed_train": _count_labels(self.train), "reviewed_heldout": _count_labels(self.heldout)}


def _count_labels(items: list[Item]) -> dict[str, int]:
    return {name: sum(1 for _, label in items if label == value) for name, value in LABELS.items()}


# --- the data ---------------------------------------------------------------------------------------------


def base_datasets(settings: Settings | None = None) -> list[Path]:
    """The configured base datasets (``none``: reviewed images only), or by default those the shipped model was
    trained on; only folders present on disk."""
    settings = settings or get_settings()
    if [name.lower() for name in settings.training_datasets] == ["none"]:
        return []
    names = list(settings.training_datasets) or _shipped_model_datasets()
    return [Path(name) for name in names if Path(name).is_dir()]


def _shipped_model_datasets() -> list[str]:
    if not metadata_path(SHIPPED_MODEL).is_file():
        return []
    training_data = read_metadata(SHIPPED_MODEL).get("training_data") or {}
    return [str(name) for name in training_data.get("datasets", [])]


def is_heldout(sha256: str, percent: int) -> bool:
    """Held out by the image's own hash: the same image stays on the same side in every run, whatever else changes."""
    return int(sha256[:8], 16) % 100 < percent


def reviewed_images(session: Session) -> list[tuple[Image, str]]:
    """Every reviewed image with its latest real/fake label (a later review overrides an earlier one)."""
    rows = session.execute(
        select(Review.image_id, Review.label).order_by(Review.created_at, Review.id)
    ).all()
    latest = {image_id: label for image_id, label in rows}
    labelled = {image_id: label for image_id, label in latest.items() if label in LABELS}
    if not labelled:
        return []
    images = session.scalars(select(Image).where(Image.id.in_(labelled)).order_by(Image.sha256))
    return [(image, labelled[image.id]) for image in images]


def assemble_training_data(session: Session, settings: Settings | None = None) -> TrainingData:
    """Base datasets plus reviewed images, split deterministically into train and held-out by SHA-256."""
    settings = settings or get_settings()
    data = TrainingData(base_datasets=base_datasets(settings))
    for image, label in reviewed_images(session):
        item = (image_path(image.storage_key, settings), LABELS[label])
        (data.heldout if is_heldout(image.sha256, settings.training_heldout_percent) else data.train).append(item)
    return data


# --- requesting, progress, cancelling ---------------------------------------------------------------------


def request_training(session: Session, *, from_scratch: bool = False, epochs: int | None = None,
                     requested_by: str = "", settings: Settings | None = None) -> TrainingRun:
    """Create a queued training run, or refuse with the reason (one at a time; something to train on)."""
    settings = settings or get_settings()
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
    run = TrainingRun(status="queued", params=params, requested_by=requested_by,
                      progress={"phase": "queued", "epoch": 0, "epochs": epochs, "history": []})
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        raise FakewatchError("training_busy", "Another training run was requested at the same moment: one run at "
                                              "a time. Wait for it to finish or cancel it.", 409) from None
    return run


def start_training(session: Session, *, from_scratch: bool = False, epochs: int | None = None,
                   requested_by: str = "") -> TrainingRun:
    """Request a run, commit it and hand it to the training queue: what the console's Retrain button does."""
    run = request_training(session, from_scratch=from_scratch, epochs=epochs, requested_by=requested_by)
    session.commit()
    try:
        sender().send_task(TRAIN_TASK, args=[run.id], queue=TRAINING_QUEUE)
    except Exception as error:  # any broker failure ends the run with its reason
        end_run(session, run.id, "failed", f"The training queue could not be reached: {error}")
        session.commit()
        raise FakewatchError("broker_unavailable", f"The training queue could not be reached: {error}", 503) from error
    return run


def current_run(session: Session) -> TrainingRun | None:
    """The queued or running run, if any."""
    return session.scalar(select(TrainingRun).where(TrainingRun.status.in_(ACTIVE_STATUSES))
                          .order_by(TrainingRun.created_at).limit(1))


def latest_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(1))


def get_run(session: Session, run_id: str) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"There is no training run {run_id}.")
    return run


def list_runs(session: Session, limit: int = 20) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit)))


def expire_stale_runs(session: Session, settings: Settings | None = None) -> list[str]:
    """Fail running runs whose worker stopped reporting (killed, crashed), so they do not block retraining forever."""
    settings = settings or get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.training_stale_after_s)
    expired = []
    for run in session.scalars(select(TrainingRun).where(TrainingRun.status == "running")):
        if _last_heartbeat(run) < cutoff:
            _finish(run, "failed", "The training worker stopped reporting progress (it was stopped or crashed). "
                                   "Nothing was registered; the active model is unchanged.")
            expired.append(run.id)
    return expired


def _last_heartbeat(run: TrainingRun) -> datetime:
    beat = (run.progress or {}).get("heartbeat")
    return datetime.fromisoformat(beat) if beat else (run.started_at or run.created_at)


def claim_run(session: Session, run_id: str) -> TrainingRun | None:
    """Mark a queued run running for this worker; None when it was cancelled, taken or is gone."""
    now = utcnow()
    result = session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == "queued",
                                                       TrainingRun.cancel_requested.is_(False))
                             .values(status="running", started_at=now))
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


def cancel_run(session: Session, run_id: str) -> TrainingRun:
    """Cancel a queued run at once, or ask the worker to stop a running one (it stops within a batch)."""
    run = get_run(session, run_id)
    if run.status == "queued":
        _finish(run, "cancelled", "Cancelled before it started.")
    elif run.status == "running":
        run.cancel_requested = True
    else:
        raise FakewatchError("not_cancellable", f"Training run {run_id} already ended ({run.status}).", 409)
    session.flush()
    return run


def end_run(session: Session, run_id: str, status: str, reason: str) -> TrainingRun:
    """End a run as failed or cancelled with the reason a person reads in the console."""
    run = get_run(session, run_id)
    _finish(run, status, reason)
    session.flush()
    return run


def finish_run(session: Session, run_id: str, model_path: Path, comparison: dict[str, Any]) -> ModelVersion:
    """Register the trained model as a candidate (never active) and attach the candidate-vs-active comparison."""
    from backend.model_versions import register_model

    run = get_run(session, run_id)
    version = register_model(session, model_path, activate=False)
    run.model_version_id = version.id
    run.progress = {**run.progress, "comparison": comparison}
    _finish(run, "done", None)
    session.flush()
    return version


def _finish(run: TrainingRun, status: str, reason: str | None) -> None:
    run.status = status
    run.error = reason
    run.finished_at = utcnow()
    run.progress = {**(run.progress or {}), "phase": status}


# --- promotion ----------------------------------------------------------------------------------------------


def promote_version(session: Session, version_id: int) -> ModelVersion:
    """Make a version active in one transaction; scoring workers switch before their next chunk of checks."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"There is no model version {version_id}.")
    if not Path(version.file).is_file():
        raise FakewatchError("invalid_model", f"The file of version {version.name} is missing: {version.file}.", 409)
    return activate_version(session, version_id)


def previous_version(session: Session) -> ModelVersion | None:
    """The version that was active before the current one (the latest activated among the inactive)."""
    return session.scalar(select(ModelVersion).where(ModelVersion.active.is_(False),
                                                     ModelVersion.activated_at.is_not(None))
                          .order_by(ModelVersion.activated_at.desc()).limit(1))


def roll_back(session: Session, version_id: int | None = None) -> ModelVersion:
    """Re-activate ``version_id``, or the version active before the current one."""
    if version_id is None:
        previous = previous_version(session)
        if previous is None:
            raise FakewatchError("nothing_to_roll_back", "No earlier version has ever been active.", 409)
        version_id = previous.id
    return promote_version(session, version_id)


def rescore_flagged(session: Session, requested_by: str = "") -> Batch | None:
    """Score every image with a flagged verdict again, as a batch, with the version active now. Commits (the
    workers must see the checks before their ids are sent)."""
    from backend.queue import enqueue_scoring

    version = active_version(session)
    if version is None:
        raise FakewatchError("no_active_model", "No version is active to re-score with.", 409)
    image_ids = list(session.scalars(select(Check.image_id).where(Check.flagged.is_(True), Check.status == "done",
                                                                  Check.image_id.is_not(None))
                                     .group_by(Check.image_id)))
    if not image_ids:
        return None
    batch = Batch(name=f"Re-score flagged images with {version.name}" + (f" ({requested_by})" if requested_by else ""),
                  total=len(image_ids))
    session.add(batch)
    session.flush()
    checks = [Check(image_id=image_id, source="batch", batch_id=batch.id) for image_id in image_ids]
    session.add_all(checks)
    session.commit()
    enqueue_scoring([check.id for check in checks])
    return batch


# --- what the console and the API show --------------------------------------------------------------------




def run_to_dict(session: Session, run: TrainingRun) -> dict[str, Any]:
    """A training run as the API returns it and the console shows it."""
    progress = dict(run.progress or {})
    candidate = session.get(ModelVersion, run.model_version_id) if run.model_version_id else None
    return {
        "id": run.id,
        "status": run.status,
        "phase": progress.get("phase"),
        "epoch": progress.get("epoch", 0),
        "epochs": progress.get("epochs", run.params.get("epochs")),
        "history": progress.get("history", []),
        "params": run.params,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "requested_by": run.requested_by,
        "candidate": {"id": candidate.id, "name": candidate.name, "active": candidate.active} if candidate else None,
        "comparison": progress.get("comparison"),
        "created_at": isoformat_z(run.created_at),
        "started_at": isoformat_z(run.started_at),
        "finished_at": isoformat_z(run.finished_at),
    }


def comparison_rows(comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per evaluation set and metric, active beside candidate: the console's comparison table."""
    rows = []
    for part in (comparison or {}).get("sets", []):
        for metric in ("roc_auc", "accuracy", "fpr_at_threshold"):
            rows.append({"set": part["name"], "images": part["count"], "metric": metric,
                         "active": part["active"].get(metric), "candidate": part["candidate"].get(metric)})
    return rows
