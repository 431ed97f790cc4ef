"""A training run, as the training worker executes it: fit on base datasets plus reviewed images, measure the
candidate beside the active version on the same data, and register it as a candidate.

Everything is written under ``models_dir/.staging/<run id>/`` and moved into place with one rename only once the
run has succeeded, so a failed or cancelled run leaves no half-written model and changes nothing active."""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion
from backend.training.data import Item, TrainingData, assemble_training_data
from backend.training.runs import claim_run, end_run, finish_run, record_progress
from backend.training.versions import active_version
from core.enums import RunStatus

log = logging.getLogger("fakewatch.training")

# The cancel flag is read from the database after training batches, but at most this often.
CANCEL_POLL_S = 2.0
UNCHANGED = "Nothing was registered; the active model is unchanged."


class RunMonitor:
    """The hooks models.train calls: per-epoch progress into the run's row, and a throttled cancel check."""

    def __init__(self, run_id: str, settings: Settings) -> None:
        self.run_id = run_id
        self.settings = settings
        self.cancelled = False
        self._checked_at = 0.0

    def _report(self, *, phase: str | None = None, epoch: int | None = None,
                metrics: dict[str, float] | None = None) -> None:
        with session_scope(self.settings) as session:
            cancel_requested = record_progress(session, self.run_id, phase=phase, epoch=epoch, metrics=metrics)
        self.cancelled = cancel_requested or self.cancelled

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._report(epoch=epoch, metrics=_rounded(metrics))

    def should_stop(self) -> bool:
        if not self.cancelled and time.monotonic() - self._checked_at >= CANCEL_POLL_S:
            self._checked_at = time.monotonic()
            self._report()
        return self.cancelled

    def phase(self, name: str) -> None:
        self._report(phase=name)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(float(value), 5) for key, value in metrics.items()}


def train_model(run_id: str, settings: Settings) -> dict[str, Any]:
    """Execute one training run to its end: done (a candidate registered), failed or cancelled, with the reason."""
    from models.train import TrainingCancelled  # noqa: PLC0415 - models.train imports TensorFlow

    with session_scope(settings) as session:
        run = claim_run(session, run_id)
        if run is None:
            return {"run": run_id, "status": "not claimed"}
        params = dict(run.params)
    staging = settings.models_dir / ".staging" / run_id
    try:
        version_name = _train_and_register(run_id, params, staging, settings)
    except TrainingCancelled:
        _end(settings, run_id, RunStatus.CANCELLED, f"Cancelled by a moderator. {UNCHANGED}")
        return {"run": run_id, "status": RunStatus.CANCELLED.value}
    except Exception as error:  # whatever went wrong is the run's reason, shown in the console
        log.exception("training run %s failed", run_id)
        _end(settings, run_id, RunStatus.FAILED, f"{type(error).__name__}: {error}. {UNCHANGED}")
        return {"run": run_id, "status": RunStatus.FAILED.value}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"run": run_id, "status": RunStatus.DONE.value, "version": version_name}


def _end(settings: Settings, run_id: str, status: RunStatus, reason: str) -> None:
    with session_scope(settings) as session:
        end_run(session, run_id, status, reason)


def _train_and_register(run_id: str, params: dict[str, Any], staging: Path, settings: Settings) -> str:
    from models.data import OTHER_GROUP, REVIEWED_SHARE  # noqa: PLC0415 - beside models.train
    from models.train import TrainConfig, TrainingCancelled, train  # noqa: PLC0415 - TensorFlow

    monitor = RunMonitor(run_id, settings)
    with session_scope(settings) as session:
        data = assemble_training_data(session, settings)
        base = session.get(ModelVersion, params["base_version_id"]) if params.get("base_version_id") else None
        init_from = base.file if base is not None else None
    staging.mkdir(parents=True, exist_ok=True)
    monitor.phase("training")
    name = f"{params.get('architecture', 'default')}-retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}-{run_id[:6]}"
    model_path = train(TrainConfig(
        [str(path) for path in data.base_datasets], arch=params.get("architecture", "default"),
        epochs=int(params["epochs"]), out=staging / "model.keras", items=data.train, init_from=init_from,
        on_epoch=monitor.on_epoch, should_stop=monitor.should_stop, name=name, verbose=0,
        # Reviewed images (stored outside any dataset folder) get a fixed share of the draws, so a few hundred
        # reviews of a new collection move the model; the base datasets keep it from forgetting.
        shares={OTHER_GROUP: REVIEWED_SHARE},
    ))
    monitor.phase("comparing")
    comparison = compare_with_active(model_path, data, settings)
    if monitor.should_stop():
        raise TrainingCancelled("training was cancelled")
    final_dir = settings.models_dir / name
    os.rename(staging, final_dir)  # one atomic step: the version's files appear together or not at all
    try:
        with session_scope(settings) as session:
            return finish_run(session, run_id, final_dir / model_path.name, comparison).name
    except BaseException:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise


def compare_with_active(candidate_path: Path, data: TrainingData, settings: Settings) -> dict[str, Any]:
    """Score the held-out reviewed images and the base datasets' validation splits with both models, each at its
    own threshold, so the console can put them side by side (backend/training/comparison.py reads the result)."""
    from models.data import list_many  # noqa: PLC0415 - the models package stays out of the worker's import
    from models.serving import Detector  # noqa: PLC0415

    with session_scope(settings) as session:
        active = active_version(session)
        active_file, active_name = (active.file, active.name) if active is not None else (None, None)
    candidate = Detector.load(candidate_path)
    current = Detector.load(active_file) if active_file else None
    sets = [("held-out reviewed images", data.heldout)]
    sets += [(f"{path.name} valid (used for model selection)", list_many([path], "valid")) for path in data.base_datasets]
    results = [_compare_on(label, items, candidate, current) for label, items in sets if items]
    return {"active_version": active_name, "candidate_version": candidate.version,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "sets": results}


def _compare_on(label: str, items: list[Item], candidate: Any, current: Any) -> dict[str, Any]:
    from models.data import load_items  # noqa: PLC0415
    from models.metrics import compute_metrics  # noqa: PLC0415 - scikit-learn

    loaded = load_items(items)

    def measure(detector: Any) -> dict[str, Any]:
        if detector is None or not loaded.images:
            return {}
        return compute_metrics(detector.score(loaded.images), loaded.labels, detector.threshold)

    return {"name": label, "count": len(loaded.images), "candidate": measure(candidate), "active": measure(current)}

