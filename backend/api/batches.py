"""Batches of URLs: POST /api/v1/batches, GET /api/v1/batches[/<id>[/results]], POST /api/v1/batches/<id>/cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Float, Integer, List, Nested, String
from apiflask.validators import OneOf, Range
from flask import Response, request, stream_with_context, url_for

from backend.api.auth import auth
from backend.api.session import db
from backend.batches import (
    RESULT_COLUMNS,
    Entry,
    batch_to_dict,
    cancel_batch,
    entries_from_file,
    entries_from_json,
    format_results,
    get_batch,
    iter_results,
    list_batches,
    submit_list,
)
from backend.db import new_session
from backend.errors import FakewatchError

bp = APIBlueprint("batches", __name__, url_prefix="/api/v1/batches", tag="Batches")

RESULT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

BATCH_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["urls"], "properties": {
                "urls": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
                "name": {"type": "string", "maxLength": 200}}}},
            "text/plain": {"schema": {"type": "string", "description": "One URL per line; # starts a comment."}},
            "text/csv": {"schema": {"type": "string", "description": "A CSV with a header row and a `url` column."}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "A .csv with a `url` column, or text with one URL per line."},
                "name": {"type": "string"}}}},
        },
    }
}


class InvalidLine(Schema):
    line = Integer()
    value = String()
    reason = String()


class BatchOut(Schema):
    id = String()
    name = String()
    status = String(validate=OneOf(["queued", "running", "done", "cancelled"]))
    total = Integer(metadata={"description": "Distinct valid URLs, one check each."})
    queued = Integer()
    running = Integer()
    done = Integer()
    failed = Integer()
    cancelled = Integer()
    flagged = Integer()
    rate_per_s = Float(allow_none=True, metadata={"description": "Items finished per second, recently."})
    eta_s = Float(allow_none=True, metadata={"description": "Estimated seconds until every item is final."})
    invalid = List(Nested(InvalidLine))
    duplicates = Integer(metadata={"description": "Repeated URLs folded into one item (only when created)."})
    created_at = String()
    finished_at = String(allow_none=True)


class BatchPage(Schema):
    batches = List(Nested(BatchOut))
    page = Integer()
    per_page = Integer()
    total = Integer()


class NameQuery(Schema):
    name = String(load_default="", metadata={"description": "A name for the batch (JSON bodies may carry it too)."})


class PageQuery(Schema):
    page = Integer(load_default=1, validate=Range(min=1))
    per_page = Integer(load_default=20, validate=Range(min=1, max=100))


class ResultsQuery(Schema):
    format = String(load_default="csv", validate=OneOf(list(RESULT_TYPES)))
    # Named apart from its query key: ``only`` is an attribute of every marshmallow Schema.
    which = String(data_key="only", load_default="all", validate=OneOf(["all", "flagged", "failed"]))


def _read_entries() -> tuple[list[Entry], str]:
    """The submitted lines and the batch name, from JSON, plain text, CSV, or an uploaded file."""
    if request.is_json:
        return entries_from_json(request.get_json(silent=True))
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise FakewatchError("invalid_request", "Upload the list as a multipart file field named `file`.")
        return entries_from_file(upload.read(), upload.filename or "", upload.mimetype), request.form.get("name", "")
    if request.mimetype in ("text/plain", "text/csv"):
        return entries_from_file(request.get_data(), "", request.mimetype), ""
    raise FakewatchError("unsupported_format", 'Send JSON {"urls": [...]}, text/plain with one URL per line, text/csv '
                                               "with a `url` column, or a multipart upload named `file`.", 415)


@bp.post("")
@bp.auth_required(auth)
@bp.input(NameQuery, location="query", arg_name="query")
@bp.output(BatchOut, status_code=202, description="Accepted: the items are queued")
@bp.doc(summary="Check a list of image URLs")
def submit_batch(query: dict[str, Any]):  # type: ignore[no-untyped-def]
    entries, name = _read_entries()
    session = db()
    created = submit_list(session, entries, name=name or query.get("name") or "", api_key_id=auth.current_user.id)
    body = batch_to_dict(session, created.batch)
    body["duplicates"] = created.duplicates
    return body, 202, {"Location": url_for("batches.read_batch", batch_id=created.batch.id)}


@bp.get("")
@bp.auth_required(auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(BatchPage)
@bp.doc(summary="List batches, newest first")
def read_batches(query: dict[str, Any]):  # type: ignore[no-untyped-def]
    session = db()
    batches, total = list_batches(session, query["page"], query["per_page"])
    session.commit()  # a batch seen finished for the first time is marked done
    return {"batches": batches, "page": query["page"], "per_page": query["per_page"], "total": total}


@bp.get("/<batch_id>")
@bp.auth_required(auth)
@bp.output(BatchOut)
@bp.doc(summary="Read a batch's progress")
def read_batch(batch_id: str):  # type: ignore[no-untyped-def]
    session = db()
    body = batch_to_dict(session, get_batch(session, batch_id))
    session.commit()
    return body


@bp.post("/<batch_id>/cancel")
@bp.auth_required(auth)
@bp.output(BatchOut)
@bp.doc(summary="Cancel a batch: items not started end cancelled, running ones finish")
def cancel(batch_id: str):  # type: ignore[no-untyped-def]
    session = db()
    batch = cancel_batch(session, batch_id)
    session.commit()
    return batch_to_dict(session, batch)


@bp.get("/<batch_id>/results")
@bp.auth_required(auth)
@bp.input(ResultsQuery, location="query", arg_name="query")
@bp.doc(summary="Stream one row per URL (CSV or JSON lines)",
        responses={200: "text/csv or application/x-ndjson, columns: " + ", ".join(RESULT_COLUMNS)})
def read_results(batch_id: str, query: dict[str, Any]) -> Response:
    get_batch(db(), batch_id)  # 404 before the stream starts
    fmt, only = query["format"], query["which"]
    headers = {"Content-Disposition": f'attachment; filename="batch-{batch_id}-{only}.{fmt}"'}
    return Response(stream_with_context(_stream(batch_id, only, fmt)), mimetype=RESULT_TYPES[fmt], headers=headers)


def _stream(batch_id: str, only: str, fmt: str) -> Iterator[str]:
    # A session of its own: the request's session closes when the view returns, before the stream is read.
    session = new_session()
    try:
        yield from format_results(iter_results(session, batch_id, only), fmt)  # type: ignore[arg-type]
    finally:
        session.close()
