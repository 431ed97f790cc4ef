"""Scoring a chunk of checks: claim them, fetch URL items, reuse cached scores, decode, score in one batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL.Image import Image as PILImage
from sqlalchemy.orm import Session

from backend.checks.broker import ring_verdicts
from backend.checks.handoff import send_checks
from backend.checks.metrics import FETCH_FAILURES
from backend.checks.service import (
    ALONE_AFTER_LOSSES,
    apply_cached_scores,
    claim_checks,
    commit_finished,
    record_failure,
    record_score,
    release_for_tries_alone,
)
from backend.delivery.callbacks import schedule as schedule_callbacks
from backend.matching.lookups import match_for_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check, ModelVersion
from backend.storage.store import image_store, read_stored
from backend.training.versions import require_active_version
from core.check_evidence import NearCopyMatch
from core.decoding import decode_image
from core.enums import CheckStatus
from core.errors import FakewatchError
from core.scope import out_of_scope_reason
from worker.detectors import batcher, detector_for, process_name
from worker.fetching import fetch_into_checks
from worker.leases import holding_leases
from worker.video import score_video_checks

log = logging.getLogger("fakewatch.worker")


def score_checks(check_ids: Sequence[str], settings: Settings) -> dict[str, int]:
    """Score the given checks; returns counts by outcome. Safe to run twice on the same ids."""
    with session_scope(settings) as session:
        checks = claim_checks(session, list(check_ids), stale_after_s=settings.stuck_after_s, lease_s=settings.lease_s,
                              claimed_by=process_name())
        if not checks:
            return {"claimed": 0}
        if len(checks) > 1 and any(check.attempts > ALONE_AFTER_LOSSES for check in checks):
            return _split(session, checks, settings)
        # Announced to the batcher first: a task scoring at the same time waits (briefly) to share a model call.
        with holding_leases([check.id for check in checks], settings), batcher(settings).expecting():
            return _score_claimed(session, checks, settings)


def _split(session: Session, checks: list[Check], settings: Settings) -> dict[str, int]:
    """A chunk whose worker was lost twice, delivered again as a whole: each check goes back as a message of its
    own, so only one that itself kills its worker fails (worker_lost)."""
    ids = release_for_tries_alone(session, checks)
    for check_id in ids:
        send_checks(session, settings, [check_id])
    log.warning("a chunk of %d checks lost its worker %d times: trying them one at a time", len(checks),
                ALONE_AFTER_LOSSES)
    return {"claimed": len(checks), "split": len(ids)}


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
    fetched: dict[int, PILImage] = {}  # pixels the fetcher decoded: one decode per image in the worker
    fetch_into_checks(session, checks, settings, fetched)
    session.commit()
    pending = [check for check in checks if check.status == CheckStatus.RUNNING]
    matches = _labelled_matches(session, pending, settings)
    pending = apply_cached_scores(session, pending, version, lambda image: matches.get(image.id))
    videos = [check for check in pending if check.image is not None and check.image.media == "video"]
    score_video_checks(session, videos, version, settings, matches)  # frame by frame: worker/video.py
    _score_with_model([check for check in pending if check not in videos], version, settings, matches, fetched)
    _finish_chunk(session, checks, settings)
    return _tally(checks)


def _finish_chunk(session: Session, checks: list[Check], settings: Settings) -> None:
    """Commit the chunk's outcomes, then owe the callbacks of the checks and batches it finished: rows written
    here, posted by the callbacks worker (never from this task, so no receiver slows scoring down)."""
    finished_batches = commit_finished(session, checks)
    ring_verdicts(settings)  # an API request waiting for one of these verdicts answers now
    final = [check.id for check in checks if check.status.is_final and check.callback_url]
    if final or finished_batches:
        schedule_callbacks(session, settings, check_ids=final, batch_ids=finished_batches)


def _labelled_matches(session: Session, checks: list[Check], settings: Settings) -> dict[int, NearCopyMatch | None]:
    """Each image's labelled near-copies (rule 3's evidence), looked up once per image of the chunk. Each lookup's
    catch-up reads only rows above the highest id seen; the look-back for late commits is read at most every
    LOOKBACK_EVERY_S (backend/matching/lookups.py), so a chunk does not re-read it per image."""
    matches: dict[int, NearCopyMatch | None] = {}
    for check in checks:
        if check.image_id is not None and check.image_id not in matches:
            matches[check.image_id] = match_for_image(session, settings, check.image)
    return matches


def _score_with_model(checks: list[Check], version: ModelVersion, settings: Settings,
                      matches: dict[int, NearCopyMatch | None], fetched: dict[int, PILImage]) -> None:
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
            decoded = fetched.get(stored.id)
            if decoded is None:
                decoded = decode_image(read_stored(stored.storage_key, image_store(settings)), settings.image_limits)
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
        detector = detector_for(version, settings)
    except FakewatchError as error:  # its files could not be fetched or verified: never score with it
        log.error("model %s unavailable: %s", version.name, error.message)
        FETCH_FAILURES.labels("model").inc()
        for group in groups:
            for check in group:
                record_failure(check, error.code, error.message)
        return
    try:
        scored = batcher(settings).score([(detector, image) for image in images])
    except Exception as error:
        log.exception("model %s failed on %d images", version.name, len(images))
        for group in groups:
            for check in group:
                record_failure(check, "model_error", f"The model failed on this image: {error}")
        return
    for group, result in zip(groups, scored, strict=True):
        for check in group:
            record_score(check, version, result.score, regions=result.regions,
                         match=matches.get(group[0].image_id or 0))


def _tally(checks: list[Check]) -> dict[str, int]:
    counts: dict[str, int] = {"claimed": len(checks)}
    for check in checks:
        counts[check.status.value] = counts.get(check.status.value, 0) + 1
    return counts
