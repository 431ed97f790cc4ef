"""Moderators' reviews: the review queue (paged, or every matching image at once), recording a label (one or
many images at once, with an optional reason from the configured policy categories), undoing the last decision,
escalating an image to a second review with a note, and an image's history (its checks, reviews and escalations)
for the console's Image page.

A label belongs to an image (its bytes), not to one check: once reviewed, every check of the same SHA-256
shows the label in its ``review`` field, and the image leaves the queue. An escalated image leaves the main queue
for the second-review queue until someone labels it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, select, update
from sqlalchemy.orm import Session

from backend.schema import Check, Escalation, Image, Review, utcnow
from core.enums import FLAGGED_VERDICTS, CheckStatus, Label, Source, Verdict, VerdictSource
from core.errors import FakewatchError, NotFound
from core.policy import verdict_confidence

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
    # False: the main queue (escalated images left out); True: the second-review queue of escalated images.
    escalated: bool = False


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
    verdict_source: VerdictSource = VerdictSource.MODEL
    confidence: float | None = None
    provenance: dict[str, Any] | None = None
    match: dict[str, Any] | None = None
    escalation_note: str | None = None
    escalated_by: str | None = None


@dataclass(frozen=True)
class Decision:
    """What one click (or one bulk action) did: the reviews it wrote."""

    reviewer: str
    label: Label
    image_ids: tuple[int, ...]
    at: datetime


def _open_escalation(image_id: Any) -> Any:
    return exists().where(Escalation.image_id == image_id, Escalation.resolved_at.is_(None))


def _queue_query(filters: QueueFilters, exclude_image_ids: Sequence[int]) -> Select[Check]:
    reviewed = exists().where(Review.image_id == Check.image_id)
    verdicts = [v for v in filters.verdicts if v in FLAGGED_VERDICTS] or FLAGGED_VERDICTS
    query = select(Check).where(
        Check.status == CheckStatus.DONE, Check.image_id.is_not(None),
        Check.score >= filters.min_score, Check.score <= filters.max_score,
    )
    if filters.escalated:
        # A second review may take back a label too: escalated images stay here until labelled after escalation.
        query = query.where(_open_escalation(Check.image_id))
    else:
        query = query.where(Check.flagged.is_(True), ~reviewed, Check.verdict.in_(verdicts),
                            ~_open_escalation(Check.image_id))
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
                 exclude_image_ids: Sequence[int] = (), offset: int = 0) -> list[QueueItem]:
    """Flagged, unreviewed images, one item per image, oldest first or highest score first; ``offset`` images are
    passed over (paging)."""
    filters = filters or QueueFilters()
    if filters.order not in QUEUE_ORDERS:
        raise FakewatchError("invalid_request", f"order must be one of {', '.join(QUEUE_ORDERS)}.")
    order = (Check.created_at, Check.id) if filters.order == "oldest" else (Check.score.desc(), Check.created_at)
    query = _queue_query(filters, exclude_image_ids).order_by(*order)
    seen: set[int] = set()
    items: list[Check] = []
    # Several checks of one image are one item: read in pages until enough distinct images are found.
    for check in session.scalars(query.execution_options(yield_per=max((offset + limit) * 2, 50))):
        if check.image_id is not None and check.image_id not in seen:
            seen.add(check.image_id)
            if len(seen) > offset:
                items.append(check)
            if len(items) >= limit:
                break
    notes = _open_escalations(session, [check.image_id for check in items if check.image_id is not None])
    return [_queue_item(check, notes.get(check.image_id or 0)) for check in items]


def queue_image_ids(session: Session, filters: QueueFilters | None = None,
                    exclude_image_ids: Sequence[int] = ()) -> list[int]:
    """Every image waiting under these filters, on every page: what "select all" labels."""
    query = _queue_query(filters or QueueFilters(), exclude_image_ids).with_only_columns(Check.image_id).distinct()
    return sorted(int(image_id) for image_id in session.scalars(query) if image_id is not None)


def _open_escalations(session: Session, image_ids: Sequence[int]) -> dict[int, Escalation]:
    if not image_ids:
        return {}
    rows = session.scalars(select(Escalation).where(Escalation.image_id.in_(list(image_ids)),
                                                    Escalation.resolved_at.is_(None))
                           .order_by(Escalation.created_at))
    return {row.image_id: row for row in rows}  # the newest open escalation of each image


def _queue_item(check: Check, escalation: Escalation | None = None) -> QueueItem:
    assert check.image is not None and check.score is not None and check.verdict is not None
    source = check.verdict_source or VerdictSource.MODEL
    return QueueItem(
        check_id=check.id, image_id=check.image.id, sha256=check.image.sha256, storage_key=check.image.storage_key,
        width=check.image.width, height=check.image.height, score=check.score, verdict=check.verdict,
        source=check.source, source_url=check.source_url, page_url=check.page_url, batch_id=check.batch_id,
        model_version=check.model_version.name if check.model_version else None, created_at=check.created_at,
        verdict_source=source,
        confidence=verdict_confidence(check.score, check.verdict) if source == VerdictSource.MODEL else None,
        provenance=check.image.provenance, match=check.match,
        escalation_note=escalation.note if escalation else None,
        escalated_by=escalation.escalated_by if escalation else None,
    )


def queue_size(session: Session, filters: QueueFilters | None = None, exclude_image_ids: Sequence[int] = ()) -> int:
    """How many distinct images wait for a label under these filters."""
    subquery = _queue_query(filters or QueueFilters(), exclude_image_ids).with_only_columns(Check.image_id).distinct()
    return int(session.scalar(select(func.count()).select_from(subquery.subquery())) or 0)


def oldest_waiting(session: Session) -> datetime | None:
    """When the longest-waiting image in the queue was checked."""
    query = _queue_query(QueueFilters(), ()).with_only_columns(func.min(Check.created_at))
    return session.scalar(query)


def _validate_label(label: str, note: str | None, reason: str | None, reasons: Sequence[str]) -> Label:
    if label not in tuple(Label):
        raise FakewatchError("invalid_request",
                             f"label must be one of {', '.join(Label)}, not {label!r}.")
    _validate_note(note)
    if reason is not None and reason not in reasons:
        choices = ", ".join(reasons) or "none configured (FAKEWATCH_REVIEW_REASONS)"
        raise FakewatchError("invalid_request", f"reason must be one of: {choices}; not {reason!r}.")
    return Label(label)


def _validate_note(note: str | None) -> None:
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise FakewatchError("invalid_request", f"A note has at most {MAX_NOTE_CHARS} characters.")


def label_images(session: Session, image_ids: Sequence[int], label: str, reviewer: str,
                 note: str | None = None, check_ids: Sequence[str | None] | None = None, *,
                 reason: str | None = None, reasons: Sequence[str] = ()) -> Decision:
    """Record one decision: the same label for one or several images, by one moderator, at one instant
    (so undo takes back the whole decision). ``reason`` is one of ``reasons`` (FAKEWATCH_REVIEW_REASONS). The
    decision settles the images' open escalations."""
    chosen = _validate_label(label, note, reason or None, reasons)
    if not reviewer.strip():
        raise FakewatchError("invalid_request", "A review records who made it: reviewer is required.")
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise FakewatchError("invalid_request", "Choose at least one image to label.")
    known = set(session.scalars(select(Image.id).where(Image.id.in_(ids))))
    if missing := [i for i in ids if i not in known]:
        raise NotFound(f"There is no image with id {missing[0]}.")
    by_image = dict(zip(image_ids, check_ids or [None] * len(image_ids), strict=True))
    now = utcnow()
    for image_id in ids:
        session.add(Review(image_id=image_id, check_id=by_image.get(image_id), label=chosen, reviewer=reviewer,
                           note=note or None, reason=reason or None, created_at=now))
    session.execute(update(Escalation).where(Escalation.image_id.in_(ids), Escalation.resolved_at.is_(None))
                    .values(resolved_at=now, resolved_by=reviewer))
    session.flush()
    # TODO(merge with issue 14): one audit event per decision (reviewer, label, reason, image ids).
    return Decision(reviewer=reviewer, label=chosen, image_ids=tuple(ids), at=now)


def label_image(session: Session, image_id: int, label: str, reviewer: str, note: str | None = None,
                check_id: str | None = None, *, reason: str | None = None, reasons: Sequence[str] = ()) -> Decision:
    return label_images(session, [image_id], label, reviewer, note, [check_id], reason=reason, reasons=reasons)


def escalate_images(session: Session, image_ids: Sequence[int], note: str, by: str,
                    check_ids: Sequence[str | None] | None = None) -> list[Escalation]:
    """Send images to the second-review queue with a note saying what the next moderator should look at."""
    text = (note or "").strip()
    if not text:
        raise FakewatchError("invalid_request", "An escalation needs a note: say what the second reviewer should "
                                                "look at.")
    _validate_note(text)
    if not by.strip():
        raise FakewatchError("invalid_request", "An escalation records who made it.")
    ids = list(dict.fromkeys(image_ids))
    known = set(session.scalars(select(Image.id).where(Image.id.in_(ids))))
    if not ids or (missing := [i for i in ids if i not in known]):
        raise NotFound(f"There is no image with id {missing[0]}." if ids else "Choose an image to escalate.")
    by_image = dict(zip(image_ids, check_ids or [None] * len(image_ids), strict=True))
    now = utcnow()
    rows = [Escalation(image_id=image_id, check_id=by_image.get(image_id), note=text, escalated_by=by,
                       created_at=now) for image_id in ids]
    session.add_all(rows)
    session.flush()
    # TODO(merge with issue 14): an audit event per escalation (who, note, image ids).
    return rows


def escalated_count(session: Session) -> int:
    """Images waiting in the second-review queue."""
    query = select(func.count(func.distinct(Escalation.image_id))).where(Escalation.resolved_at.is_(None))
    return int(session.scalar(query) or 0)


def undo_last_decision(session: Session, reviewer: str) -> Decision | None:
    """Delete this moderator's most recent decision (every review it wrote); the images return to the queue
    unless someone else had labelled them. None when there is nothing to undo."""
    last_at = session.scalar(select(func.max(Review.created_at)).where(Review.reviewer == reviewer))
    if last_at is None:
        return None
    rows = list(session.scalars(select(Review).where(Review.reviewer == reviewer, Review.created_at == last_at)))
    for row in rows:
        session.delete(row)
    # The escalations that decision settled are open again: the images go back to the second-review queue.
    session.execute(update(Escalation).where(Escalation.resolved_by == reviewer, Escalation.resolved_at == last_at)
                    .values(resolved_at=None, resolved_by=None))
    session.flush()
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
    escalations: list[Escalation]


def image_history(session: Session, sha256: str) -> ImageHistory:
    """The image, every check of it (newest first) and its reviews (newest first)."""
    image = session.scalar(select(Image).where(Image.sha256 == sha256.strip().lower()))
    if image is None:
        raise NotFound(f"No stored image has SHA-256 {sha256!r}.")
    checks = list(session.scalars(
        select(Check).where(Check.image_id == image.id).order_by(Check.created_at.desc(), Check.id)))
    reviews = list(session.scalars(
        select(Review).where(Review.image_id == image.id).order_by(Review.created_at.desc(), Review.id.desc())))
    escalations = list(session.scalars(select(Escalation).where(Escalation.image_id == image.id)
                                       .order_by(Escalation.created_at.desc(), Escalation.id.desc())))
    return ImageHistory(image=image, checks=checks, reviews=reviews, escalations=escalations)
