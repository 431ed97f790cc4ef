"""Checks: submitting an image or URL, reading a check back, and the state changes the workers make.

Every entry point (API, CLI, console, Celery tasks) goes through these functions; the database row is the
source of truth for a check's state, and a check's status only moves forward:
queued -> running -> done | failed, or queued -> cancelled."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.errors import FakewatchError, NotFound
from backend.intake import ImageInfo, inspect_image
from backend.model_versions import require_active_version
from backend.policy import decide_verdict, is_flagged, verdict_confidence
from backend.schema import Check, Image, ModelVersion, Review, isoformat_z, utcnow
from backend.settings import Settings, get_settings
from backend.store import put_image

SOURCES = ("upload", "url", "extension", "batch")
FINAL_STATUSES = ("done", "failed", "cancelled")


def store_image(session: Session, data: bytes, settings: Settings | None = None,
                info: ImageInfo | None = None) -> Image:
    """Validate untrusted bytes, store them content-addressed, and return their (possibly existing) row.

    ``info`` is the result of ``inspect_image`` on these bytes when the caller already has it (the fetcher does)."""
    # Bytes with a known SHA-256 passed every intake check when first stored: skip decoding them again.
    known = session.scalar(select(Image).where(Image.sha256 == hashlib.sha256(data).hexdigest()))
    if known is not None:
        return known
    if info is None:
        info = inspect_image(data, settings)
    key = put_image(data, info.sha256, settings)
    image = Image(sha256=info.sha256, byte_size=info.byte_size, format=info.format,
                  width=info.width, height=info.height, storage_key=key)
    try:
        with session.begin_nested():
            session.add(image)
    except IntegrityError:
        # Another request stored the same bytes a moment ago.
        image = session.scalars(select(Image).where(Image.sha256 == info.sha256)).one()
    return image


def find_cached_scores(session: Session, image_ids: Sequence[int], model_version_id: int) -> dict[int, float]:
    """Earlier scores of the same bytes by the same model version, by image id (one query for all of them)."""
    rows = session.execute(
        select(Check.image_id, Check.score)
        .where(Check.image_id.in_(set(image_ids)), Check.model_version_id == model_version_id,
               Check.status == "done", Check.score.is_not(None))
        .order_by(Check.finished_at.desc())
    )
    # Newest first, so the oldest score of each image is written last and wins (the one first reported).
    return {image_id: score for image_id, score in rows}


@dataclass
class Submission:
    check: Check
    needs_scoring: bool


def submit_image(session: Session, data: bytes, *, source: str = "upload", source_url: str | None = None,
                 page_url: str | None = None, api_key_id: int | None = None,
                 settings: Settings | None = None, info: ImageInfo | None = None) -> Submission:
    """Create a check for image bytes. If the active model already scored these bytes, the check is done at once.

    The caller commits, then enqueues when ``needs_scoring`` (so a worker never sees an uncommitted row)."""
    if source not in SOURCES:
        raise FakewatchError("invalid_request", f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
    image = store_image(session, data, settings, info)
    version = require_active_version(session)
    check = Check(image_id=image.id, image=image, source=source, source_url=source_url, page_url=page_url,
                  api_key_id=api_key_id)
    session.add(check)
    cached = find_cached_scores(session, [image.id], version.id).get(image.id)
    if cached is not None:
        _finish(check, version, cached, cached=True)
    session.flush()
    return Submission(check=check, needs_scoring=cached is None)


def get_check(session: Session, check_id: str) -> Check:
    check = session.get(Check, check_id)
    if check is None:
        raise NotFound(f"There is no check {check_id!r}.")
    return check


def wait_for_final(session: Session, check_id: str, timeout_s: float) -> Check:
    """Poll the database until the check is final or the time is up; short sleeps first, since most
    verdicts take tens of milliseconds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.003
    while True:
        check = get_check(session, check_id)
        if check.status in FINAL_STATUSES or time.monotonic() >= deadline:
            return check
        session.expire_all()
        session.rollback()  # end the read transaction so the next poll sees new commits
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.05)


def latest_review(session: Session, image_id: int | None) -> Review | None:
    if image_id is None:
        return None
    return session.scalar(
        select(Review).where(Review.image_id == image_id).order_by(Review.created_at.desc(), Review.id.desc()).limit(1)
    )




def check_to_dict(session: Session, check: Check) -> dict[str, Any]:
    """The check object of DESIGN.md, as every endpoint returns it."""
    review = latest_review(session, check.image_id)
    image = check.image
    return {
        "id": check.id,
        "status": check.status,
        "verdict": check.verdict,
        "score": check.score,
        "confidence": verdict_confidence(check.score, check.verdict),
        "flagged": check.flagged,
        "cached": check.cached,
        "model_version": check.model_version.name if check.model_version else None,
        "image": {"sha256": image.sha256, "width": image.width, "height": image.height, "format": image.format} if image else None,
        "source": check.source,
        "source_url": check.source_url,
        "page_url": check.page_url,
        "batch_id": check.batch_id,
        "review": {"label": review.label, "by": review.reviewer, "at": isoformat_z(review.created_at)} if review else None,
        "error": {"code": check.error_code, "message": check.error_message} if check.error_code else None,
        "attempts": check.attempts,
        "created_at": isoformat_z(check.created_at),
        "started_at": isoformat_z(check.started_at),
        "finished_at": isoformat_z(check.finished_at),
    }


# --- state changes made by the workers --------------------------------------------------------------------


def claim_checks(session: Session, check_ids: list[str], stale_after_s: float) -> list[Check]:
    """Mark the given checks running and return those this caller won.

    A check is claimed when it is queued, or running but stale (its worker died); one already final or being
    worked on elsewhere is skipped, which makes a redelivered message harmless."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_after_s)
    # One conditional UPDATE for the whole chunk; RETURNING names the rows this caller won.
    claimed = list(session.scalars(
        update(Check)
        .where(Check.id.in_(check_ids),
               or_(Check.status == "queued", and_(Check.status == "running", Check.started_at < stale)))
        .values(status="running", started_at=now, attempts=Check.attempts + 1)
        .returning(Check.id)
    ))
    session.commit()
    return list(session.scalars(select(Check).where(Check.id.in_(claimed)))) if claimed else []


def _finish(check: Check, version: ModelVersion, score: float, cached: bool) -> None:
    verdict = decide_verdict(score, version.threshold, version.band)
    check.status = "done"
    check.score = float(score)
    check.verdict = verdict
    check.flagged = is_flagged(verdict)
    check.cached = cached
    check.model_version_id = version.id
    check.model_version = version
    check.error_code = check.error_message = None
    check.finished_at = utcnow()


def record_score(session: Session, check: Check, version: ModelVersion, score: float, cached: bool = False) -> None:
    if check.status != "running":
        return
    _finish(check, version, score, cached)


def record_failure(session: Session, check: Check, code: str, message: str) -> None:
    if check.status in FINAL_STATUSES:
        return
    check.status = "failed"
    check.error_code = code
    check.error_message = message
    check.finished_at = utcnow()


def attach_image(session: Session, check: Check, data: bytes, settings: Settings | None = None,
                 info: ImageInfo | None = None) -> Image:
    """Give a URL check (a batch item) the image its URL returned."""
    image = store_image(session, data, settings, info)
    check.image_id = image.id
    check.image = image
    return image


def sweep_stuck_checks(session: Session, settings: Settings | None = None) -> list[str]:
    """Re-queue checks left queued or running past ``stuck_after_s`` (a lost message, a killed worker);
    a check that already had ``max_attempts`` attempts ends failed instead. Returns the ids to send again."""
    settings = settings or get_settings()
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.stuck_after_s)
    stuck_now = or_(and_(Check.status == "queued", Check.queued_at < cutoff),
                    and_(Check.status == "running", Check.started_at < cutoff))
    stuck = list(session.scalars(select(Check).where(stuck_now).limit(5000)))
    retry: list[str] = []
    for check in stuck:
        if check.attempts >= settings.max_attempts:
            record_failure(session, check, "worker_lost",
                           f"The worker stopped {check.attempts} times while handling this check; it was given up. "
                           "Submit the image again, and check the worker logs if this repeats.")
        else:
            retry.append(check.id)
    session.commit()
    return requeue_checks(session, retry, stuck_now)


def requeue_checks(session: Session, check_ids: Sequence[str], still: ColumnElement[bool]) -> list[str]:
    """Mark checks queued again, only where ``still`` holds at the moment of the update (so a check a worker
    claimed or finished meanwhile is left alone), and commit; returns the ids to send again. The caller sends
    them after this commit, so a worker never receives an id whose row does not say queued."""
    if not check_ids:
        return []
    ids = list(session.scalars(
        update(Check).where(Check.id.in_(list(check_ids)), still)
        .values(status="queued", queued_at=utcnow(), started_at=None)
        .returning(Check.id)
    ))
    session.commit()
    return ids
