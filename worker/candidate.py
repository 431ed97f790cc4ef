"""A training run's trainer, in a process of its own (``python -m worker.candidate RUN_ID``, the settings as JSON on
stdin): fit on base datasets plus reviewed images, measure the candidate beside the active version on the same
data, and leave the model and ``result.json`` (the comparison) in ``models_dir/.staging/<run id>/``.

worker/training.py starts it, ends it when the run is cancelled, and registers what it left. A process of its own
because TensorFlow keeps what a run allocated (gigabytes with the real datasets) until its process exits: the
training worker, idle between runs, gives it all back."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion
from backend.training.data import Item, TrainingData, assemble_training_data
from backend.training.model_files import fetch_verified
from backend.training.runs import get_run, record_progress
from backend.training.versions import active_version
from core.retraining import HELDOUT_SET, ComparedSet, Comparison, Metrics

log = logging.getLogger("fakewatch.training")

# The cancel flag is read from the database after training batches, but at most this often.
CANCEL_POLL_S = 2.0
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
# The trainer's exit statuses beside 0 (a candidate is staged): 1 failed (ERROR_FILE says why), 3 cancelled.
EXIT_FAILED = 1
EXIT_CANCELLED = 3


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


def train_candidate(run_id: str, settings: Settings, staging: Path) -> None:
    """Train and compare the run's candidate into ``staging`` (the model files and RESULT_FILE); raises
    models.train.TrainingCancelled when the run is cancelled between batches."""
    from models.data import OTHER_GROUP, REVIEWED_SHARE  # noqa: PLC0415 - beside models.train
    from models.train import TrainConfig, TrainingCancelled, train  # noqa: PLC0415 - TensorFlow

    monitor = RunMonitor(run_id, settings)
    with session_scope(settings) as session:
        params = dict(get_run(session, run_id).params)
        data = assemble_training_data(session, settings)
        base = session.get(ModelVersion, params["base_version_id"]) if params.get("base_version_id") else None
        init_from = str(fetch_verified(base, settings)) if base is not None else None
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
    (staging / RESULT_FILE).write_text(json.dumps({"name": name, "model_file": model_path.name,
                                                   "comparison": comparison.to_dict()}))


def compare_with_active(candidate_path: Path, data: TrainingData, settings: Settings) -> Comparison:
    """Score the held-out reviewed images and the base datasets' validation splits with both models, each at its
    own threshold, so the console can put them side by side (backend/training/comparison.py reads the result)."""
    from models.data import list_many  # noqa: PLC0415 - the models package stays out of the worker's import
    from models.serving import Detector  # noqa: PLC0415

    with session_scope(settings) as session:
        active = active_version(session)
        active_file, active_name = (fetch_verified(active, settings), active.name) if active else (None, None)
    candidate = Detector.load(candidate_path)
    current = Detector.load(active_file) if active_file else None
    sets = [(HELDOUT_SET, data.heldout)]
    sets += [(f"{path.name} valid (used for model selection)", list_many([path], "valid")) for path in data.base_datasets]
    results = tuple(_compare_on(label, items, candidate, current) for label, items in sets if items)
    return Comparison(active_version=active_name, candidate_version=candidate.version,
                      measured_at=datetime.now(UTC).isoformat(timespec="seconds"), sets=results)


def _compare_on(label: str, items: list[Item], candidate: Any, current: Any) -> ComparedSet:
    from models.data import load_items  # noqa: PLC0415
    from models.metrics import compute_metrics  # noqa: PLC0415 - scikit-learn

    loaded = load_items(items)

    def measure(detector: Any) -> Metrics:
        if detector is None or not loaded.images:
            return {}
        return compute_metrics(detector.score(loaded.images), loaded.labels, detector.threshold)

    return ComparedSet(name=label, count=len(loaded.images), candidate=measure(candidate), active=measure(current))


def main(run_id: str) -> int:
    """The trainer process: settings on stdin; the exit status says how it ended (ERROR_FILE says why it failed)."""
    from models.cli import import_tensorflow  # noqa: PLC0415 - TensorFlow, without its start-up chatter

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[trainer]: %(message)s")
    settings = Settings.model_validate_json(sys.stdin.read())
    staging = settings.models_dir / ".staging" / run_id
    import_tensorflow()  # before models.train, which imports Keras (and so TensorFlow) at once
    from models.train import TrainingCancelled  # noqa: PLC0415

    try:
        train_candidate(run_id, settings, staging)
    except TrainingCancelled:
        return EXIT_CANCELLED
    except Exception as error:  # whatever went wrong is the run's reason, shown in the console
        log.exception("training run %s failed", run_id)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / ERROR_FILE).write_text(f"{type(error).__name__}: {error}")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
