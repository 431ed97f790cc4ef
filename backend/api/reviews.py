"""Moderators' work over HTTP: an image's reviews (POST to label it, GET its history) and the review queue, through
the same service functions as the console (backend/moderation/reviews.py)."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import DateTime, Float, Integer, List, String
from apiflask.validators import Length, OneOf, Range
from sqlalchemy import select

from backend.api.auth import auth, current_actor
from backend.api.context import db
from backend.moderation.reviews import QUEUE_ORDERS, QueueFilters, image_history, label_image, queue_size, review_queue
from backend.shapes import QueuePage, ReviewList, error_doc
from backend.storage.schema import Check, Image
from backend.storage.store import is_sha256
from core.enums import FLAGGED_VERDICTS, Label, Permission, Source, Verdict
from core.errors import FakewatchError, NotFound

bp = APIBlueprint("reviews", __name__, url_prefix="/api/v1", tag="Reviews")


class ReviewIn(Schema):
    label = String(required=True, validate=OneOf([label.value for label in Label]))
    reason = String(load_default=None, allow_none=True, validate=Length(max=200),
                    metadata={"description": "A short why, such as the policy it breaks."})
    note = String(load_default=None, allow_none=True, validate=Length(max=2000))
    check_id = String(load_default=None, allow_none=True, validate=Length(max=32),
                      metadata={"description": "The check the label was given from, when there is one."})


class QueueQuery(Schema):
    page = Integer(load_default=1, validate=Range(min=1, max=10_000))
    per_page = Integer(load_default=24, validate=Range(min=1, max=100))
    verdict = List(String(validate=OneOf([verdict.value for verdict in FLAGGED_VERDICTS])), load_default=list,
                   metadata={"description": "fake and/or uncertain (default both)."})
    source = List(String(validate=OneOf([source.value for source in Source])), load_default=list)
    batch_id = String(load_default=None, validate=Length(max=32))
    created_from = DateTime(load_default=None)
    created_to = DateTime(load_default=None)
    min_score = Float(load_default=0.0, validate=Range(min=0, max=1))
    max_score = Float(load_default=1.0, validate=Range(min=0, max=1))
    order = String(load_default="oldest", validate=OneOf(list(QUEUE_ORDERS)))


def _image(sha256: str) -> Image:
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    image = db().scalar(select(Image).where(Image.sha256 == sha256))
    if image is None or image.deleted_at is not None:
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    return image


def _reviews(sha256: str) -> dict[str, Any]:
    return {"sha256": sha256, "reviews": image_history(db(), sha256).reviews}


@bp.post("/images/<sha256>/reviews")
@bp.auth_required(auth)
@bp.input(ReviewIn, arg_name="body")
@bp.output(ReviewList, status_code=201, description="Labelled: the image's reviews, newest (this one) first")
@bp.doc(summary="Label an image (real or fake), as a moderator does in the console",
        responses=error_doc(400, 403, 413))
def create_review(sha256: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = current_actor(Permission.LABEL)  # a moderator's or admin's key; others get 403 forbidden
    session = db()
    image = _image(sha256)
    check_id = body.get("check_id")
    if check_id and session.scalar(select(Check.id).where(Check.id == check_id, Check.image_id == image.id)) is None:
        raise NotFound(f"Image {sha256} has no check {check_id}.")
    label_image(session, image.id, body["label"], actor, note=body.get("note"), check_id=check_id,
                reason=body.get("reason"))
    session.commit()
    return _reviews(sha256), 201


@bp.get("/images/<sha256>/reviews")
@bp.auth_required(auth)
@bp.output(ReviewList)
@bp.doc(summary="An image's reviews, newest first", responses=error_doc(403, 422))
def read_reviews(sha256: str) -> dict[str, Any]:
    current_actor(Permission.READ_ALL)  # moderators' decisions: viewers, moderators and admins
    _image(sha256)
    return _reviews(sha256)


@bp.get("/queue")
@bp.auth_required(auth)
@bp.input(QueueQuery, location="query", arg_name="query")
@bp.output(QueuePage)
@bp.doc(summary="The review queue: flagged images nobody labelled, one item per image, with the console's filters",
        responses=error_doc(403))
def read_queue(query: dict[str, Any]) -> dict[str, Any]:
    current_actor(Permission.READ_ALL)
    if query["min_score"] > query["max_score"]:
        raise FakewatchError("invalid_request", "min_score must not be above max_score.")
    filters = QueueFilters(verdicts=tuple(Verdict(v) for v in query["verdict"]) or FLAGGED_VERDICTS,
                           sources=tuple(Source(s) for s in query["source"]), batch_id=query["batch_id"],
                           created_from=query["created_from"], created_to=query["created_to"],
                           min_score=query["min_score"], max_score=query["max_score"], order=query["order"])
    page, per_page = query["page"], query["per_page"]
    session = db()
    # The queue is read in order until enough distinct images are found; a page is the tail of the first N.
    items = review_queue(session, filters, limit=page * per_page)[(page - 1) * per_page:]
    return {"items": items, "page": page, "per_page": per_page, "total": queue_size(session, filters)}
