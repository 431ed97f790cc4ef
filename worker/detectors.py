"""The model a scoring process holds: loaded once per process, and again only when the active version changes.
Its files come from the store, each checked against the SHA-256 its row records (backend/training/model_files.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from backend.checks.metrics import note_loaded_model
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion
from backend.training.model_files import fetch_verified
from backend.training.versions import active_version

if TYPE_CHECKING:
    from models.serving import Detector

log = logging.getLogger("fakewatch.worker")

_loaded: dict[int, Detector] = {}


def detector_for(version: ModelVersion, settings: Settings) -> Detector:
    """The detector for this version, fetching and verifying its files and loading it (and dropping any other) on
    first use. ModelUnverified when its files cannot be fetched or do not match: nothing is scored with them."""
    detector = _loaded.get(version.id)
    if detector is None:
        from models.serving import Detector  # noqa: PLC0415 - loading a model needs TensorFlow; importing this must not

        path = fetch_verified(version, settings)
        log.info("loading model version %s from %s (verified copy of %s)", version.name, path, version.file)
        detector = Detector.load(path)
        detector.warm()
        note_loaded_model(version.name)
        _loaded.clear()
        _loaded[version.id] = detector
    return detector


def warm_up(settings: Settings) -> None:
    """Load the active model when the process starts, so the first check does not pay for it."""
    try:
        with session_scope(settings) as session:
            version = active_version(session)
            if version is None:
                log.warning("no active model version yet: checks will fail with no_active_model until one is promoted")
                return
            detector_for(version, settings)
            log.info("model %s loaded and warm", version.name)
    except Exception:  # a failed warm-up is retried by the first task, which reports the error
        log.exception("could not load the active model at start-up")
