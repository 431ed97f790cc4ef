"""Scoring a chunk of checks: claim them, fetch URL items, reuse cached scores, decode, score in one batch."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from backend.checks.service import claim_checks, commit_finished, find_cached_scores, record_failure, record_score
from backend.delivery.callbacks import schedule as schedule_callbacks
from backend.matching.lookups import match_for_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check, ModelVersion
from backend.storage.store import read_stored
from backend.training.versions import require_active_version
from core.decoding import decode_image
from core.enums import CheckStatus
from core.errors import FakewatchError
from core.scope import out_of_scope_reason
from worker.detectors import detector_for
from worker.fetching import fetch_into_checks
from worker.leases import holding_leases

log = logging.getLogger("fakewatch.worker")


def score_checks(check_ids: Sequence[str], settings: Settings) -> dict[str, int]:
    """Score the given checks; returns counts by outcome. Safe to run twice on the same ids."""
    with session_scope(settings) as session:
        checks = claim_checks(session, list(check_ids), stale_after_s=settings.stuck_after_s, lease_s=settings.lease_s,
                              claimed_by=f"{socket.gethostname()}:{os.getpid()}"[:100])
        if not checks:
            return {"claimed": 0}
        with holding_leases([check.id for check in checks], settings):
            return _score_claimed(session, checks, settings)


def _score_claimed(session: Session, checks: list[Check], settings: Settings) -> dict[str, int]:
    # The version is fixed for the whole chunk: a promotion mid-chunk applies to the next one.
    try:
        version = require_active_version(session)
    except FakewatchError as error:
        for check in checks:
            record_failure(check, error.code, error.message)
        _finish_chunk(session, checks, settings)
        return {"claimed": len(checks), CheckStatus.FAILED.value: len(checks)}
    # Concurrent, per-host capped, retried within the chunk's time budget: see worker/fetching.py.
    fetch_into_checks(session, checks, settings)
    session.commit()
    pending = [check for check in checks if check.status == CheckStatus.RUNNING]
    matches = _labelled_matches(session, pending, settings)
    pending = _apply_cached_scores(session, pending, version, matches)
    _score_with_model(pending, version, settings, matches)
    _finish_chunk(session, checks, settings)
    return _tally(checks)


def _finish_chunk(session: Session, checks: list[Check], settings: Settings) -> None:
    """Commit the chunk's outcomes, then owe the callbacks of the checks and batches it finished: rows written
    here, posted by the callbacks worker (never from this task, so no receiver slows scoring down)."""
    finished_batches = commit_finished(session, checks)
    final = [check.id for check in checks if check.status.is_final and check.callback_url]
    if final or finished_batches:
        schedule_callbacks(session, settings, check_ids=final, batch_ids=finished_batches)


def _labelled_matches(session: Session, checks: list[Check], settings: Settings) -> dict[int, dict[str, Any] | None]:
    """Each image's labelled near-copies (rule 3's evidence), looked up once per image of the chunk."""
    matches: dict[int, dict[str, Any] | None] = {}
    for check in checks:
        if check.image_id is not None and check.image_id not in matches:
            matches[check.image_id] = match_for_image(session, settings, check.image)
    return matches


def _apply_cached_scores(session: Session, checks: list[Check], version: ModelVersion,
                         matches: dict[int, dict[str, Any] | None]) -> list[Check]:
    """Reuse an earlier score of the same bytes by the same version; return the checks still to score."""
    cached = find_cached_scores(session, [check.image_id for check in checks if check.image_id is not None], version.id)
    remaining: list[Check] = []
    for check in checks:
        assert check.image_id is not None
        if check.image_id in cached:
            earlier = cached[check.image_id]
            record_score(check, version, earlier.score, cached=True, regions=earlier.regions,
                         match=matches.get(check.image_id))
        else:
            remaining.append(check)
    return remaining


def _score_with_model(checks: list[Check], version: ModelVersion, settings: Settings,
                      matches: dict[int, dict[str, Any] | None]) -> None:
    # Several checks of the same bytes in one chunk are scored once.
    by_image: dict[int, list[Check]] = {}
    for check in checks:
        assert check.image_id is not None and check.image is not None
        by_image.setdefault(check.image_id, []).append(check)
    images, groups = [], []
    for group in by_image.values():
        stored = group[0].image
        assert stored is not None
        try:
            decoded = decode_image(read_stored(stored.storage_key, settings.images_dir), settings.image_limits)
            stored.scope = out_of_scope_reason(np.asarray(decoded))
            images.append(decoded)
            groups.append(group)
        except (FakewatchError, OSError) as error:
            code = error.code if isinstance(error, FakewatchError) else "invalid_image"
            message = error.message if isinstance(error, FakewatchError) else f"The stored image could not be read: {error}"
            for check in group:
                record_failure(check, code, message)
    if not images:
        return
    try:
        scored = detector_for(version).score_with_regions(images)
    except Exception as error:  # noqa: BLE001 - the model failing must end the checks, not leave them running
        log.exception("model %s failed on %d images", version.name, len(images))
        for group in groups:
            for check in group:
                record_failure(check, "model_error", f"The model failed on this image: {error}")
        return
    for group, result in zip(groups, scored, strict=True):
        regions = [region.to_dict() for region in result.regions]
        for check in group:
            record_score(check, version, result.score, regions=regions, match=matches.get(group[0].image_id or 0))


def _tally(checks: list[Check]) -> dict[str, int]:
    counts: dict[str, int] = {"claimed": len(checks)}
    for check in checks:
        counts[check.status.value] = counts.get(check.status.value, 0) + 1
    return counts
