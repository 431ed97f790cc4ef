"""Batches of URLs or uploaded files: POST /api/v1/batches, GET /api/v1/batches[/<id>[/results]],
POST /api/v1/batches/<id>/cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Integer, String
from apiflask.validators import OneOf, Range
from flask import Response, request, stream_with_context, url_for
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.api.auth import auth, current_actor, current_key
from backend.api.context import app_settings, db
from backend.api.idempotent import idempotent_request
from backend.batches.lifecycle import CreatedBatch, cancel_batch, get_batch, submit_list
from backend.batches.lists import Entry, entries_from_file, entries_from_json
from backend.batches.progress import BatchSummary, list_batches, summarize
from backend.batches.results import (
    RESULT_COLUMNS,
    RESULT_FILTERS,
    ResultFilter,
    ResultFormat,
    format_results,
    iter_results,
)
from backend.batches.uploads import UploadedFile, submit_files
from backend.delivery.callbacks import callback_url_for
from backend.delivery.callbacks import schedule as schedule_callbacks
from backend.settings import Settings
from backend.shapes import BatchOut, BatchPage, CreatedBatchOut, error_doc, response_doc
from backend.storage.db import new_session
from core.enums import Permission
from core.errors import FakewatchError

bp = APIBlueprint("batches", __name__, url_prefix="/api/v1/batches", tag="Batches")

CALLBACK_DOC = ("Where to POST the batch once it finishes, signed with the key's secret (X-Fakewatch-Signature); "
                "default: the key's callback URL. Items are not posted one by one.")

RESULT_TYPES: dict[ResultFormat, str] = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

BATCH_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["urls"], "properties": {
                "urls": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
                "name": {"type": "string", "maxLength": 200},
                "callback_url": {"type": "string", "description": CALLBACK_DOC}}}},
            "text/plain": {"schema": {"type": "string", "description": "One URL per line; # starts a comment."}},
            "text/csv": {"schema": {"type": "string", "description": "A CSV with a header row and a `url` column."}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "A .csv with a `url` column, or text with one URL per line."},
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": 100,
                          "description": "Instead of `file`: the images (or clips) themselves, one `files` field "
                                         "each, up to FAKEWATCH_BATCH_MAX_FILES (100): an upload batch."},
                "name": {"type": "string"},
                "callback_url": {"type": "string", "description": CALLBACK_DOC}}}},
        },
    }
}


@dataclass(frozen=True)
class Created(BatchSummary):
    """A batch just submitted: its summary and the duplicates folded, which only the submission reports."""

    duplicates: int = 0


class NameQuery(Schema):
    name = String(load_default="", metadata={"description": "A name for the batch (JSON bodies may carry it too)."})
    callback_url = String(load_default="", metadata={"description": "For a text or CSV body: " + CALLBACK_DOC})


# Far past any real listing, and small enough that (page - 1) * per_page stays a 64-bit OFFSET.
MAX_PAGE = 100_000


class PageQuery(Schema):
    page = Integer(load_default=1, validate=Range(min=1, max=MAX_PAGE))
    per_page = Integer(load_default=20, validate=Range(min=1, max=100))


class ResultsQuery(Schema):
    format = String(load_default="csv", validate=OneOf(list(RESULT_TYPES)))
    # Named apart from its query key: ``only`` is an attribute of every marshmallow Schema.
    which = String(data_key="only", load_default="all", validate=OneOf(list(RESULT_FILTERS)))


def _read_entries() -> tuple[list[Entry], str, str]:
    """The submitted lines, the batch name and callback URL, from JSON, plain text, CSV, or an uploaded file."""
    if request.is_json:
        body = request.get_json(silent=True)
        entries, name = entries_from_json(body)
        callback = body.get("callback_url") if isinstance(body, dict) else None
        if callback is not None and not isinstance(callback, str):
            raise FakewatchError("invalid_request", "callback_url must be text: an http(s) URL.")
        return entries, name, callback or ""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise FakewatchError("invalid_request", "Upload the list as a multipart file field named `file`.")
        return (entries_from_file(upload.read(), upload.filename or "", upload.mimetype), request.form.get("name", ""),
                request.form.get("callback_url", ""))
    if request.mimetype in ("text/plain", "text/csv"):
        return entries_from_file(request.get_data(), "", request.mimetype), "", ""
    raise FakewatchError("unsupported_format", 'Send JSON {"urls": [...]}, text/plain with one URL per line, text/csv '
                                               "with a `url` column, or a multipart upload named `file`.", 415)


def _submit(session: Session, query: dict[str, Any], api_key_id: int | None,
            remember: Callable[[CreatedBatch], None] | None) -> CreatedBatch:
    """An upload batch for multipart ``files``, else a batch of the URLs the body lists."""
    settings = app_settings()
    if request.mimetype == "multipart/form-data" and "files" in request.files:
        files = [UploadedFile(upload.filename or "", upload.read) for upload in request.files.getlist("files")]
        callback_url = callback_url_for(current_key(), request.form.get("callback_url") or query.get("callback_url")
                                        or None, settings)
        return submit_files(session, files, settings, name=request.form.get("name") or query.get("name") or "",
                            api_key_id=api_key_id, callback_url=callback_url, before_commit=remember)
    entries, name, callback = _read_entries()
    callback_url = callback_url_for(current_key(), callback or query.get("callback_url") or None, settings)
    return submit_list(session, entries, settings, name=name or query.get("name") or "", api_key_id=api_key_id,
                       callback_url=callback_url, before_commit=remember)


@bp.post("")
@bp.auth_required(auth)
@bp.input(NameQuery, location="query", arg_name="query")
@bp.output(CreatedBatchOut, status_code=202, description="Accepted: the items are queued")
@bp.doc(summary="Check a list of image URLs, or many uploaded files at once",
        responses=error_doc(400, 403, 413, 415, 422))
def submit_batch(query: dict[str, Any]) -> tuple[Created, int, dict[str, str]]:
    """A retried request with the same ``Idempotency-Key`` answers with the batch the first one created."""
    actor = current_actor(Permission.SUBMIT)
    idempotent = idempotent_request("batches")
    session = db()
    earlier = idempotent.earlier_resource(session) if idempotent is not None else None
    if earlier is None:
        remember = (lambda created: idempotent.remember(session, created.batch.id)) if idempotent else None
        try:
            created = _submit(session, query, actor.id, remember)
        except IntegrityError:
            # A copy of this request (same key) committed first: answer with its batch.
            session.rollback()
            earlier = idempotent.earlier_resource(session) if idempotent is not None else None
            if earlier is None:
                raise
    if earlier is not None:
        summary = summarize(session, get_batch(session, earlier, actor))
        return (Created(batch=summary.batch, progress=summary.progress, delivery=summary.delivery), 202,
                {"Location": url_for("batches.read_batch", batch_id=earlier), "Idempotent-Replayed": "true"})
    if created.batch.status.is_final:  # an upload batch whose every file was scored before: its callback is owed
        schedule_callbacks(session, app_settings(), batch_ids=[created.batch.id])
    summary = summarize(session, created.batch)
    body = Created(batch=summary.batch, progress=summary.progress, delivery=summary.delivery,
                   duplicates=created.duplicates)
    return body, 202, {"Location": url_for("batches.read_batch", batch_id=created.batch.id)}


@bp.get("/<batch_id>")
@bp.auth_required(auth)
@bp.output(BatchOut)
@bp.doc(summary="Read a batch's progress")
def read_batch(batch_id: str) -> BatchSummary:
    session = db()
    return summarize(session, get_batch(session, batch_id, current_actor()))


@bp.get("")
@bp.auth_required(auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(BatchPage)
@bp.doc(summary="List batches, newest first")
def read_batches(query: dict[str, Any]) -> dict[str, Any]:
    batches, total = list_batches(db(), query["page"], query["per_page"], actor=current_actor())
    return {"batches": batches, "page": query["page"], "per_page": query["per_page"], "total": total}


@bp.post("/<batch_id>/cancel")
@bp.auth_required(auth)
@bp.output(BatchOut)
@bp.doc(summary="Cancel a batch: items not started end cancelled, running ones finish")
def cancel(batch_id: str) -> BatchSummary:
    session = db()
    batch = cancel_batch(session, batch_id, actor=current_actor())
    session.commit()
    schedule_callbacks(session, app_settings(), batch_ids=[batch.id])  # a cancelled batch has finished too
    return summarize(session, batch)


@bp.get("/<batch_id>/results")
@bp.auth_required(auth)
@bp.input(ResultsQuery, location="query", arg_name="query")
@bp.doc(summary="Stream one row per URL (CSV or JSON lines)", responses=response_doc(
    200, "One row per URL in input order (`row: item`), a video's followed by one `row: frame` row per sampled "
         "frame; columns: " + ", ".join(RESULT_COLUMNS), RESULT_TYPES.values(),
    {"type": "string"}))
def read_results(batch_id: str, query: dict[str, Any]) -> Response:
    get_batch(db(), batch_id, current_actor())  # 404 before the stream starts, for anyone's batch but one's own
    fmt, only = query["format"], query["which"]
    headers = {"Content-Disposition": f'attachment; filename="batch-{batch_id}-{only}.{fmt}"'}
    stream = stream_with_context(_stream(app_settings(), batch_id, only, fmt))
    return Response(stream, mimetype=RESULT_TYPES[fmt], headers=headers)


def _stream(settings: Settings, batch_id: str, only: ResultFilter, fmt: ResultFormat) -> Iterator[str]:
    # A session of its own: the request's session closes when the view returns, before the stream is read.
    session = new_session(settings)
    try:
        yield from format_results(iter_results(session, batch_id, only), fmt)
    finally:
        session.close()
