"""Moderators' reviews: the review queue (paged, or every matching image at once), recording a label (one or
many images at once, with an optional reason from the configured policy categories), undoing the last decision,
escalating an image to a second review with a note, and an image's history (its checks, reviews and escalations)
for the console's Image page.

A label belongs to an image (its bytes), not to one check: once reviewed, every check of the same SHA-256
shows the label in its ``review`` field, and the image leaves the queue. An escalated image leaves the main queue
for the second-review queue until someone labels it.

A label also follows the image's near-copies (PDQ hashes within ``CopyRule.distance``): the queue shows copies
as one card, and labelling an image resolves the open queue items that are its copies in the same decision
(their reviews name the image labelled and the distance; undo takes them back with it). A real label resolves
only copies the model itself was unsure of, never one it called fake (core.policy's rule 3: a face swap of a
cleared photo is a near-copy of it). Checks a match already decided fake stay out of the queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from backend.checks.served import latest_reviews
from backend.checks.verdicts import provenance_summary
from backend.identity.access import Actor, require
from backend.identity.audit import record
from backend.matching.pdq import DEFAULT_COPY_RULE, CopyRule, hex_to_bytes
from backend.storage.schema import Check, Escalation, Image, Review, isoformat_z, utcnow
from core.enums import FLAGGED_VERDICTS, AuditAction, CheckStatus, Label, Permission, Source, Verdict, VerdictSource
from core.errors import FakewatchError, NotFound
from core.policy import verdict_confidence

QUEUE_ORDERS = ("oldest", "highest_score")
MAX_NOTE_CHARS = 2000
MAX_REASON_CHARS = 200


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
    # What decided the flag (the model, provenance, a near-duplicate) and the file's evidence in one line.
    verdict_source: VerdictSource | None = None
    evidence: str = ""
    # Other waiting images that are near-copies of this one, shown on its card (labelling it resolves them).
    copies: tuple[int, ...] = ()
    confidence: float | None = None
    provenance: dict[str, Any] | None = None
    match: dict[str, Any] | None = None
    escalation_note: str | None = None
    escalated_by: str | None = None


@dataclass(frozen=True)
class ResolvedCopy:
    """A waiting image resolved because it is a near-copy of one the moderator labelled."""

    image_id: int
    matched_image_id: int
    distance: int


@dataclass(frozen=True)
class Decision:
    """What one click (or one bulk action) did: the reviews it wrote, the near-copies it resolved among them."""

    reviewer: str
    label: Label
    image_ids: tuple[int, ...]
    at: datetime
    copies: tuple[ResolvedCopy, ...] = ()


def _open_escalation(image_id: Any) -> Any:
    return exists().where(Escalation.image_id == image_id, Escalation.resolved_at.is_(None))


def _queue_query(filters: QueueFilters, exclude_image_ids: Sequence[int]) -> Select[Check]:
    reviewed = exists().where(Review.image_id == Check.image_id)
    # A copy of an image labelled fake was decided by that label: no one needs to look at it again.
    not_matched_fake = or_(Check.verdict_source.is_(None), Check.verdict_source != VerdictSource.MATCH,
                           Check.verdict != Verdict.FAKE)
    query = select(Check).where(
        Check.status == CheckStatus.DONE, Check.image_id.is_not(None),
        Check.image_deleted_at.is_(None),  # a deleted image has nothing left to look at
        Check.score >= filters.min_score, Check.score <= filters.max_score,
    )
    if filters.escalated:
        # A second review may take back a label too: escalated images stay here until labelled after escalation.
        query = query.where(_open_escalation(Check.image_id))
    else:
        query = query.where(
            Check.flagged.is_(True), ~reviewed, not_matched_fake, ~_open_escalation(Check.image_id),
            Check.verdict.in_([v for v in filters.verdicts if v in FLAGGED_VERDICTS] or FLAGGED_VERDICTS))
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
                 exclude_image_ids: Sequence[int] = (), copies: CopyRule | None = DEFAULT_COPY_RULE,
                 offset: int = 0) -> list[QueueItem]:
    """Flagged, unreviewed images, one item per image, oldest first or highest score first; with ``copies``, the
    waiting near-copies of an item are folded into its card (``QueueItem.copies``) rather than shown again;
    ``offset`` cards are passed over (paging)."""
    filters = filters or QueueFilters()
    if filters.order not in QUEUE_ORDERS:
        raise FakewatchError("invalid_request", f"order must be one of {', '.join(QUEUE_ORDERS)}.")
    order = (Check.created_at, Check.id) if filters.order == "oldest" else (Check.score.desc(), Check.created_at)
    query = _queue_query(filters, exclude_image_ids).order_by(*order)
    cards: dict[int, tuple[Check, tuple[int, ...]]] = {}
    waiting = _WaitingHashes.load(session, _queue_query(filters, exclude_image_ids), copies)
    folded: set[int] = set()
    # Several checks of one image are one item: read in pages until enough distinct images are found.
    for check in session.scalars(query.execution_options(yield_per=max((offset + limit) * 2, 50))):
        if check.image_id is not None and check.image_id not in cards and check.image_id not in folded:
            near = tuple(image_id for image_id, _ in waiting.near(check.image_id) if image_id not in cards)
            folded.update(near)
            cards[check.image_id] = (check, near)
            if len(cards) >= offset + limit:
                break
    shown = list(cards.values())[offset:]
    notes = _open_escalations(session, [check.image_id for check, _ in shown if check.image_id is not None])
    return [_queue_item(check, near, notes.get(check.image_id or 0)) for check, near in shown]


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


class _WaitingHashes:
    """The PDQ hashes of the images waiting under one queue query, to find near-copies among them in numpy (a
    queue holds thousands, not millions, so a scan per card costs little and needs no index in the console)."""

    def __init__(self, image_ids: list[int], codes: np.ndarray, rule: CopyRule | None) -> None:
        self.image_ids = np.array(image_ids, dtype=np.int64)
        self.codes = codes
        self.rule = rule
        self.position = {image_id: i for i, image_id in enumerate(image_ids)}

    @classmethod
    def load(cls, session: Session, queue: Select[Check], rule: CopyRule | None) -> _WaitingHashes:
        if rule is None:
            return cls([], np.zeros((0, 32), dtype=np.uint8), rule)
        waiting = queue.with_only_columns(Check.image_id).distinct().subquery()
        rows = session.execute(select(Image.id, Image.pdq_hex).join(waiting, waiting.c.image_id == Image.id)
                               .where(Image.pdq_hex.is_not(None), Image.pdq_quality >= rule.min_quality)).all()
        codes = np.frombuffer(b"".join(hex_to_bytes(pdq_hex or "") for _, pdq_hex in rows), dtype=np.uint8)
        return cls([image_id for image_id, _ in rows], codes.reshape(len(rows), 32), rule)

    def near(self, image_id: int) -> list[tuple[int, int]]:
        """The other waiting images within the distance of this one, as (image id, distance), nearest first."""
        if self.rule is None or image_id not in self.position:
            return []
        return self.near_hash(self.codes[self.position[image_id]], exclude=image_id)

    def near_hash(self, code: np.ndarray, exclude: int | None = None) -> list[tuple[int, int]]:
        assert self.rule is not None
        distances = _POPCOUNT[np.bitwise_xor(self.codes, code)].sum(axis=1, dtype=np.int64)
        hits = np.flatnonzero(distances <= self.rule.distance)
        found = [(int(self.image_ids[i]), int(distances[i])) for i in hits if int(self.image_ids[i]) != exclude]
        return sorted(found, key=lambda pair: (pair[1], pair[0]))


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _queue_item(check: Check, copies: tuple[int, ...] = (), escalation: Escalation | None = None) -> QueueItem:
    assert check.image is not None and check.score is not None and check.verdict is not None
    source = check.verdict_source or VerdictSource.MODEL
    return QueueItem(
        check_id=check.id, image_id=check.image.id, sha256=check.image.sha256, storage_key=check.image.storage_key,
        width=check.image.width, height=check.image.height, score=check.score, verdict=check.verdict,
        source=check.source, source_url=check.source_url, page_url=check.page_url, batch_id=check.batch_id,
        model_version=check.model_version.name if check.model_version else None, created_at=check.created_at,
        verdict_source=check.verdict_source, evidence=provenance_summary(check.image.provenance),
        copies=copies,
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
    # The console offers FAKEWATCH_REVIEW_REASONS and passes them; the API takes a short free-text why.
    if reason is not None and reasons and reason not in reasons:
        choices = ", ".join(reasons)
        raise FakewatchError("invalid_request", f"reason must be one of: {choices}; not {reason!r}.")
    return Label(label)


def _validate_note(note: str | None) -> None:
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise FakewatchError("invalid_request", f"A note has at most {MAX_NOTE_CHARS} characters.")


def review_state(review: Review | None) -> dict[str, object] | None:
    """A review as the audit trail records it before and after a change."""
    if review is None:
        return None
    state: dict[str, object] = {"label": review.label.value, "by": review.reviewer,
                                "at": isoformat_z(review.created_at), "note": review.note, "check_id": review.check_id}
    if review.matched_image_id is not None:
        state.update(matched_image_id=review.matched_image_id, match_distance=review.match_distance)
    return state


def label_images(session: Session, image_ids: Sequence[int], label: str, actor: Actor,
                 note: str | None = None, check_ids: Sequence[str | None] | None = None,
                 copies: CopyRule | None = DEFAULT_COPY_RULE, reason: str | None = None, *,
                 reasons: Sequence[str] = ()) -> Decision:
    """Record one decision: the same label for one or several images, by one moderator, at one instant
    (so undo takes back the whole decision). With ``copies``, the waiting near-copies of those images are
    resolved in the same decision (see the module's docstring). ``reason`` is a short why; where ``reasons``
    (FAKEWATCH_REVIEW_REASONS, the console) is given it must be one of them. ``note`` is free text. The decision
    settles the images' open escalations. One audit event per image labelled, copies too."""
    require(actor, Permission.LABEL)
    chosen = _validate_label(label, note, reason or None, reasons)
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise FakewatchError("invalid_request", f"A reason has at most {MAX_REASON_CHARS} characters.")
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
                        note=note or None, reason=reason or None, created_at=now)
        session.add(review)
        record(session, actor, AuditAction.LABEL, ("image", known[image_id]), before, review_state(review))
    session.execute(update(Escalation).where(Escalation.image_id.in_(ids), Escalation.resolved_at.is_(None))
                    .values(resolved_at=now, resolved_by=reviewer))
    session.flush()
    resolved = _resolve_copies(session, ids, chosen, actor, note, reason, now, copies)
    return Decision(reviewer=reviewer, label=chosen, image_ids=tuple(ids) + tuple(c.image_id for c in resolved),
                    at=now, copies=resolved)


def _resolve_copies(session: Session, labelled_ids: list[int], label: Label, actor: Actor, note: str | None,
                    reason: str | None, at: datetime, rule: CopyRule | None) -> tuple[ResolvedCopy, ...]:
    """Review the waiting near-copies of the images just labelled with the same label, reason and note, at the
    same instant (one audit event each, as for the images labelled)."""
    reviewer = actor.label
    if rule is None:
        return ()
    queue = _queue_query(QueueFilters(), ())
    if label == Label.REAL:
        # Only the copies no check of which the model called fake (see the module's docstring).
        other = aliased(Check)
        queue = queue.where(~exists().where(other.image_id == Check.image_id, other.verdict == Verdict.FAKE))
    waiting = _WaitingHashes.load(session, queue, rule)
    if not len(waiting.image_ids):
        return ()
    nearest: dict[int, ResolvedCopy] = {}
    labelled = session.execute(select(Image.id, Image.pdq_hex).where(
        Image.id.in_(labelled_ids), Image.pdq_hex.is_not(None), Image.pdq_quality >= rule.min_quality))
    for image_id, pdq_hex in labelled:
        code = np.frombuffer(hex_to_bytes(pdq_hex or ""), dtype=np.uint8)
        for copy_id, distance in waiting.near_hash(code, exclude=image_id):
            if copy_id in labelled_ids or (copy_id in nearest and nearest[copy_id].distance <= distance):
                continue
            nearest[copy_id] = ResolvedCopy(copy_id, image_id, distance)
    shas = {row.id: row.sha256 for row in session.execute(select(Image.id, Image.sha256).where(
        Image.id.in_(list(nearest))))}
    for copy in nearest.values():
        review = Review(image_id=copy.image_id, label=label, reviewer=reviewer, note=note or None,
                        reason=reason or None, created_at=at, matched_image_id=copy.matched_image_id,
                        match_distance=copy.distance)
        session.add(review)
        # Waiting copies have no review yet (the queue holds only unreviewed images): nothing before.
        record(session, actor, AuditAction.LABEL, ("image", shas[copy.image_id]), None, review_state(review))
    session.flush()
    return tuple(sorted(nearest.values(), key=lambda copy: (copy.distance, copy.image_id)))


def label_image(session: Session, image_id: int, label: str, actor: Actor, note: str | None = None,
                check_id: str | None = None, copies: CopyRule | None = DEFAULT_COPY_RULE,
                reason: str | None = None, *, reasons: Sequence[str] = ()) -> Decision:
    return label_images(session, [image_id], label, actor, note, [check_id], copies, reason=reason,
                        reasons=reasons)


def escalate_images(session: Session, image_ids: Sequence[int], note: str, actor: Actor,
                    check_ids: Sequence[str | None] | None = None) -> list[Escalation]:
    """Send images to the second-review queue with a note saying what the next moderator should look at."""
    require(actor, Permission.ESCALATE)
    text = (note or "").strip()
    if not text:
        raise FakewatchError("invalid_request", "An escalation needs a note: say what the second reviewer should "
                                                "look at.")
    _validate_note(text)
    by = actor.label
    ids = list(dict.fromkeys(image_ids))
    known = {row.id: row.sha256 for row in session.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids)))}
    if not ids or (missing := [i for i in ids if i not in known]):
        raise NotFound(f"There is no image with id {missing[0]}." if ids else "Choose an image to escalate.")
    by_image = dict(zip(image_ids, check_ids or [None] * len(image_ids), strict=True))
    now = utcnow()
    rows = [Escalation(image_id=image_id, check_id=by_image.get(image_id), note=text, escalated_by=by,
                       created_at=now) for image_id in ids]
    session.add_all(rows)
    for row in rows:
        record(session, actor, AuditAction.ESCALATE, ("image", known[row.image_id]), None,
               {"note": text, "check_id": row.check_id, "by": by})
    session.flush()
    return rows


def escalated_count(session: Session) -> int:
    """Images waiting in the second-review queue."""
    query = select(func.count(func.distinct(Escalation.image_id))).where(Escalation.resolved_at.is_(None))
    return int(session.scalar(query) or 0)


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
    # The escalations that decision settled are open again: the images go back to the second-review queue.
    session.execute(update(Escalation).where(Escalation.resolved_by == reviewer, Escalation.resolved_at == last_at)
                    .values(resolved_at=None, resolved_by=None))
    session.flush()
    shas = {row.id: row.sha256
            for row in session.execute(select(Image.id, Image.sha256).where(Image.id.in_([i for i, _ in removed])))}
    for image_id, before in removed:
        record(session, actor, AuditAction.UNDO, ("image", shas[image_id]), before,
               review_state(latest_review(session, image_id)))
    copies = tuple(ResolvedCopy(r.image_id, r.matched_image_id, r.match_distance or 0) for r in rows
                   if r.matched_image_id is not None)
    return Decision(reviewer=reviewer, label=rows[0].label, image_ids=tuple(r.image_id for r in rows), at=last_at,
                    copies=copies)


# --- one image's history ------------------------------------------------------------------------------------


def latest_review(session: Session, image_id: int | None) -> Review | None:
    """The label every check of these bytes shows in its ``review`` field: the newest review of the image."""
    return latest_reviews(session, [image_id]).get(image_id) if image_id is not None else None


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
