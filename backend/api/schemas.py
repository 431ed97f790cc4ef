"""Request and response shapes for the OpenAPI spec (served at /api/openapi.json, browsable at /docs)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Float, Integer, Nested, String
from apiflask.validators import OneOf, Range


class WaitQuery(Schema):
    # Only the sign is checked here; the server caps the wait at FAKEWATCH_MAX_WAIT_S (backend/api/checks.py).
    wait = Float(load_default=0.0, validate=Range(min=0),
                 metadata={"description": "Seconds to wait for the verdict before answering 202 "
                                          "(capped at the server's FAKEWATCH_MAX_WAIT_S, 10 by default)."})


class ImageOut(Schema):
    sha256 = String()
    width = Integer()
    height = Integer()
    format = String()


class ReviewOut(Schema):
    label = String()
    by = String()
    at = String()


class ErrorDetail(Schema):
    code = String()
    message = String()


class CheckOut(Schema):
    id = String()
    status = String(validate=OneOf(["queued", "running", "done", "failed", "cancelled"]))
    verdict = String(allow_none=True, metadata={"description": "real, fake or uncertain"})
    score = Float(allow_none=True, metadata={"description": "Probability that the image is fake."})
    confidence = Float(allow_none=True, metadata={"description": "Probability of the verdict's class."})
    flagged = Boolean()
    cached = Boolean()
    model_version = String(allow_none=True)
    image = Nested(ImageOut, allow_none=True)
    source = String()
    source_url = String(allow_none=True)
    page_url = String(allow_none=True)
    batch_id = String(allow_none=True)
    review = Nested(ReviewOut, allow_none=True)
    error = Nested(ErrorDetail, allow_none=True)
    attempts = Integer()
    created_at = String()
    started_at = String(allow_none=True)
    finished_at = String(allow_none=True)


__all__ = ["CheckOut", "WaitQuery"]
