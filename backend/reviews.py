"""Moderators' reviews: the review queue, recording a label (one or many images at once), undoing the last
decision, and an image's history (its checks and reviews) for the console's Image page.

A label belongs to an image (its bytes), not to one check: once reviewed, every check of the same SHA-256
shows the label in its ``review`` field, and the image leaves the queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from backend.access import Actor, require
from backend.audit import record
from backend.schema import Check, Image, Review, isoformat_z, utcnow
from core.enums import FLAGGED_VERDICTS, AuditAction, CheckStatus, Label, Permission, Source, Verdict
from core.errors import FakewatchError, NotFound

QUEUE_ORDERS = ("oldest", "highest_score")
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True)
class QueueFilters:
    verdicts: tuple[Verdict, ...] = FLAGGED_VERDICTS
    sources: tuple[Source, ...] = ()
    batch_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    min_score: float = 0.0
    max_score: float = 1.0
    order: str = "oldest"


@dataclass(frozen=True)
class QueueItem:
    """One image waiting for a label, shown through its earliest (or highest-scoring) flagged check."""

    check_id: str
    image_id: int
    sha256: str
    storage_key: str
    width: int
    height: int
    score: float
    verdict: Verdict
    source: Source
    source_url: str | None
    page_url: str | None
    batch_id: str | None
    model_version: str | None
    created_at: datetime


@dataclass(frozen=True)
class Decision:
    """What one click (or one bulk action) did: the reviews it wrote."""

    reviewer: str
    label: Label
    image_ids: tuple[int, ...]
    at: datetime


def _queue_query(filters: QueueFilters, exclude_image_ids: Sequence[int]) -> Select[Check]:
    reviewed = exists().where(Review.image_id == Check.image_id)
    query = select(Check).where(
        Check.status == CheckStatus.DONE, Check.flagged.is_(True), Check.image_id.is_not(None), ~reviewed,
        Check.verdict.in_([v for v in filters.verdicts if v in FLAGGED_VERDICTS] or FLAGGED_VERDICTS),
        Check.score >= filters.min_score, Check.score <= filters.max_score,
    )
    if filters.sources:
        query = query.where(Check.source.in_(filters.sources))
    if filters.batch_id:
        query = query.where(Check.batch_id == filters.batch_id)
    if filters.created_from:
        query = query.where(Check.created_at >= filters.created_from)
    if filters.created_to:
        query = query.where(Check.created_at < filters.created_to)
    if exclude_image_ids:
        query = query.where(Check.image_id.not_in(list(exclude_image_ids)))
    return query


def review_queue(session: Session, filters: QueueFilters | None = None, limit: int = 24,
                 exclude_image_ids: Sequence[int] = ()) -> list[QueueItem]:
    """Flagged, unreviewed images, one item per image, oldest first or highest score first."""
    filters = filters or QueueFilters()
    if filters.order not in QUEUE_ORDERS:
        raise FakewatchError("invalid_request", f"order must be one of {', '.join(QUEUE_ORDERS)}.")
    order = (Check.created_at, Check.id) if filters.order == "oldest" else (Check.score.desc(), Check.created_at)
    query = _queue_query(filters, exclude_image_ids).order_by(*order)
    items: dict[int, QueueItem] = {}
    # Several checks of one image are one item: read in pages until enough distinct images are found.
    for check in session.scalars(query.execution_options(yield_per=max(limit * 2, 50))):
        if check.image_id is not None and check.image_id not in items:
            items[check.image_id] = _queue_item(check)
            if len(items) >= limit:
                break
    return list(items.values())


def _queue_item(check: Check) -> QueueItem:
    assert check.image is not None and check.score is not None and check.verdict is not None
    return QueueItem(
        check_id=check.id, image_id=check.image.id, sha256=check.image.sha256, storage_key=check.image.storage_key,
        width=check.image.width, height=check.image.height, score=check.score, verdict=check.verdict,
        source=check.source, source_url=check.source_url, page_url=check.page_url, batch_id=check.batch_id,
        model_version=check.model_version.name if check.model_version else None, created_at=check.created_at,
    )


def queue_size(session: Session, filters: QueueFilters | None = None, exclude_image_ids: Sequence[int] = ()) -> int:
    """How many distinct images wait for a label under these filters."""
    subquery = _queue_query(filters or QueueFilters(), exclude_image_ids).with_only_columns(Check.image_id).distinct()
    return int(session.scalar(select(func.count()).select_from(subquery.subquery())) or 0)


def oldest_waiting(session: Session) -> datetime | None:
    """When the longest-waiting image in the queue was checked."""
    query = _queue_query(QueueFilters(), ()).with_only_columns(func.min(Check.created_at))
    return session.scalar(query)


def _validate_label(label: str, note: str | None) -> Label:
    if label not in tuple(Label):
        raise FakewatchError("invalid_request",
                             f"label must be one of {', '.join(Label)}, not {label!r}.")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise FakewatchError("invalid_request", f"A note has at most {MAX_NOTE_CHARS} characters.")
    return Label(label)


def review_state(review: Review | None) -> dict[str, object] | None:
    """A review as the audit trail records it before and after a change."""
    if review is None:
        return None
    return {"label": review.label.value, "by": review.reviewer, "at": isoformat_z(review.created_at),
            "note": review.note, "check_id": review.check_id}


def label_images(session: Session, image_ids: Sequence[int], label: str, actor: Actor,
                 note: str | None = None, check_ids: Sequence[str | None] | None = None) -> Decision:
    """Record one decision: the same label for one or several images, by one moderator, at one instant
    (so undo takes back the whole decision); one audit event per image."""
    require(actor, Permission.LABEL)
    chosen = _validate_label(label, note)
    reviewer = actor.label
    if not reviewer.strip():
        raise FakewatchError("invalid_request", "A review records who made it: reviewer is required.")
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise FakewatchError("invalid_request", "Choose at least one image to label.")
    known = {row.id: row.sha256 for row in session.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids)))}
    if missing := [i for i in ids if i not in known]:
        raise NotFound(f"There is no image with id {missing[0]}.")
    by_image = dict(zip(image_ids, check_ids or [None] * len(image_ids), strict=True))
    now = utcnow()
    for image_id in ids:
        before = review_state(latest_review(session, image_id))
        review = Review(image_id=image_id, check_id=by_image.get(image_id), label=chosen, reviewer=reviewer,
                        note=note or None, created_at=now)
        session.add(review)
        record(session, actor, AuditAction.LABEL, ("image", known[image_id]), before, review_state(review))
    session.flush()
    return Decision(reviewer=reviewer, label=chosen, image_ids=tuple(ids), at=now)


def label_image(session: Session, image_id: int, label: str, actor: Actor, note: str | None = None,
                check_id: str | None = None) -> Decision:
    return label_images(session, [image_id], label, actor, note, [check_id])


def undo_last_decision(session: Session, actor: Actor) -> Decision | None:
    """Delete this moderator's most recent decision (every review it wrote); the images return to the queue
    unless someone else had labelled them. None when there is nothing to undo. One audit event per image."""
    require(actor, Permission.LABEL)
    reviewer = actor.label
    last_at = session.scalar(select(func.max(Review.created_at)).where(Review.reviewer == reviewer))
    if last_at is None:
        return None
    rows = list(session.scalars(select(Review).where(Review.reviewer == reviewer, Review.created_at == last_at)))
    removed = [(row.image_id, review_state(row)) for row in rows]
    for row in rows:
        session.delete(row)
    session.flush()
    shas = {row.id: row.sha256
            for row in session.execute(select(Image.id, Image.sha256).where(Image.id.in_([i for i, _ in removed])))}
    for image_id, before in removed:
        record(session, actor, AuditAction.UNDO, ("image", shas[image_id]), before,
               review_state(latest_review(session, image_id)))
    return Decision(reviewer=reviewer, label=rows[0].label, image_ids=tuple(r.image_id for r in rows), at=last_at)


# --- one image's history ------------------------------------------------------------------------------------


def latest_review(session: Session, image_id: int | None) -> Review | None:
    """The label every check of these bytes shows in its ``review`` field: the newest review of the image."""
    if image_id is None:
        return None
    return session.scalar(
        select(Review).where(Review.image_id == image_id).order_by(Review.created_at.desc(), Review.id.desc()).limit(1)
    )


@dataclass(frozen=True)
class ImageHistory:
    image: Image
    checks: list[Check]
    reviews: list[Review]


def image_history(session: Session, sha256: str) -> ImageHistory:
    """The image, every check of it (newest first) and its reviews (newest first)."""
    image = session.scalar(select(Image).where(Image.sha256 == sha256.strip().lower()))
    if image is None:
        raise NotFound(f"No stored image has SHA-256 {sha256!r}.")
    checks = list(session.scalars(
        select(Check).where(Check.image_id == image.id).order_by(Check.created_at.desc(), Check.id)))
    reviews = list(session.scalars(
        select(Review).where(Review.image_id == image.id).order_by(Review.created_at.desc(), Review.id.desc())))
    return ImageHistory(image=image, checks=checks, reviews=reviews)
