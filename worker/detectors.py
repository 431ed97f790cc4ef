"""The model a scoring process holds: loaded when the process starts, and again only when the active version
changes. Its files come from the store, each checked against the SHA-256 its row records
(backend/training/model_files.py). A process that holds the active model says so (backend/checks/workers.py)
every few seconds, so readiness can tell that a check will be scored now; the same heartbeat loads a newly
promoted version before its first check.

Loading imports no TensorFlow: an exported version is scored by LiteRT (models/runtime.py)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from backend.checks.metrics import note_loaded_model
from backend.checks.workers import HEARTBEAT_S, announce, forget
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion
from backend.training.model_files import fetch_verified
from backend.training.versions import active_version
from worker.batching import Batcher

if TYPE_CHECKING:
    from PIL.Image import Image

    from models.serving import Detector, Scored

log = logging.getLogger("fakewatch.worker")

_loaded: dict[int, Detector] = {}
_batchers: dict[float, Batcher[tuple[Detector, Image], Scored]] = {}


def _score_pairs(pairs: list[tuple[Detector, Image]]) -> list[Scored]:
    """Each image scored by its detector: one call per detector (one, unless a promotion landed mid-batch)."""
    results: list[Scored | None] = [None] * len(pairs)
    for detector in {id(d): d for d, _ in pairs}.values():
        indexes = [i for i, (d, _) in enumerate(pairs) if d is detector]
        for index, scored in zip(indexes, detector.score_with_regions([pairs[i][1] for i in indexes]), strict=True):
            results[index] = scored
    return [result for result in results if result is not None]


def batcher(settings: Settings) -> Batcher[tuple[Detector, Image], Scored]:
    """This process's batcher: the crops of concurrent tasks scored together (worker/batching.py)."""
    budget_s = settings.batch_budget_ms / 1000
    if budget_s not in _batchers:
        _batchers[budget_s] = Batcher(_score_pairs, budget_s=budget_s)
    return _batchers[budget_s]


def detector_for(version: ModelVersion, settings: Settings) -> Detector:
    """The detector for this version, fetching and verifying its files and loading it (and dropping any other) on
    first use. ModelUnverified when its files cannot be fetched or do not match: nothing is scored with them."""
    detector = _loaded.get(version.id)
    if detector is None:
        from models.serving import Detector  # noqa: PLC0415 - numpy and the runtime, only in scoring processes

        path = fetch_verified(version, settings)
        log.info("loading model version %s from %s (verified copy of %s)", version.name, path, version.file)
        detector = Detector.load(path)
        detector.warm()
        note_loaded_model(version.name)
        _loaded.clear()
        _loaded[version.id] = detector
    return detector


def process_name(pid: int | None = None) -> str:
    """A scoring process as it signs its readiness row and its claims: ``host:pid`` (this process by default)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"[:100]


def warm_up(settings: Settings) -> None:
    """Load the active model when the process starts, so the first check does not pay for it, and say so."""
    try:
        with session_scope(settings) as session:
            version = active_version(session)
            if version is None:
                log.warning("no active model version yet: checks will fail with no_active_model until one is promoted")
                return
            detector = detector_for(version, settings)
            announce(session, process_name(), version.name, detector.runtime.name)
            log.info("model %s loaded and warm (%s)", version.name, detector.runtime.name)
    except Exception:
        log.exception("could not load the active model at start-up")


def heartbeat_once(settings: Settings) -> None:
    """Load the active version if it changed, then refresh this process's row with the version it holds."""
    with session_scope(settings) as session:
        version = active_version(session)
        if version is not None:
            detector = detector_for(version, settings)
            announce(session, process_name(), version.name, detector.runtime.name)


def start_heartbeat(settings: Settings, stop: threading.Event) -> threading.Thread:
    """A daemon thread in the scoring process: :func:`heartbeat_once` every ``HEARTBEAT_S`` until ``stop``."""

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                heartbeat_once(settings)
            except (SQLAlchemyError, OSError):
                log.warning("could not refresh this worker's readiness; trying again", exc_info=True)
            except Exception:
                log.exception("could not load the newly active model ahead of its first check")

    thread = threading.Thread(target=beat, name="fakewatch-heartbeat", daemon=True)
    thread.start()
    return thread


def leave(settings: Settings) -> None:
    """This process stops scoring: remove its row (best effort; a stale row ages out on its own)."""
    try:
        with session_scope(settings) as session:
            forget(session, process_name())
    except SQLAlchemyError:
        log.warning("could not remove this worker's readiness row; it ages out", exc_info=True)
