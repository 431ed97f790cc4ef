"""POST /api/v1/checks and GET /api/v1/checks/<id>."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Float
from apiflask.validators import Range
from flask import request, url_for
from sqlalchemy.exc import IntegrityError

from backend.api.auth import auth, current_actor, current_key
from backend.api.context import app_settings, db, set_retry_after
from backend.api.idempotent import IdempotentRequest, idempotent_request, wait_slot
from backend.checks.broker import verdict_bell
from backend.checks.handoff import send_checks
from backend.checks.served import ServedCheck, served_check
from backend.checks.service import get_check, submit_image, submit_url, wait_for_final
from backend.delivery.callbacks import callback_url_for
from backend.delivery.callbacks import schedule as schedule_callbacks
from backend.shapes import CheckOut, error_doc, response_doc
from backend.storage.schema import Check
from core.enums import UPLOAD_SOURCES, CheckStatus, Permission, Source
from core.errors import FakewatchError, Unparseable

bp = APIBlueprint("checks", __name__, url_prefix="/api/v1/checks", tag="Checks")

MAX_FIELD_CHARS = 2048
CALLBACK_DOC = ("Where to POST the check once it is final, signed with the key's secret (X-Fakewatch-Signature); "
                "default: the key's callback URL.")

CHECK_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary",
                          "description": "A still image, a video clip (MP4, MOV, WebM, MKV) or an animated GIF, WebP "
                                         "or PNG; `file` is accepted as another name for this field."},
                "image_url": {"type": "string", "description": "Where the image was found (not fetched)."},
                "page_url": {"type": "string"},
                "source": {"type": "string", "enum": [source.value for source in UPLOAD_SOURCES]},
                "callback_url": {"type": "string", "description": CALLBACK_DOC}}}},
            "application/json": {"schema": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string", "description": "An http(s) image URL for a worker to fetch."},
                "page_url": {"type": "string"},
                "callback_url": {"type": "string", "description": CALLBACK_DOC}}}},
        },
    }
}


class WaitQuery(Schema):
    # Only the sign is checked here; the server caps the wait at FAKEWATCH_MAX_WAIT_S.
    wait = Float(load_default=0.0, validate=Range(min=0),
                 metadata={"description": "Seconds to wait for the verdict before answering 202 "
                                          "(capped at the server's FAKEWATCH_MAX_WAIT_S, 10 by default)."})


def _optional_field(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise FakewatchError("invalid_request", f"{name} must be text of at most {MAX_FIELD_CHARS} characters.")
    return value


def _submit_upload(idempotent: IdempotentRequest | None) -> tuple[Check, bool]:
    """A check for the image of a multipart upload: done at once when these bytes were scored already. Returns it
    and whether it is with the workers (or needs none)."""
    upload = request.files.get("image") or request.files.get("file")  # `file`: the same field, for a video
    if upload is None:
        raise FakewatchError("invalid_request", "Send the image or video as a multipart file field named `image`.")
    data = upload.read()
    if not data:
        raise FakewatchError("invalid_image", "The uploaded file is empty.")
    source = request.form.get("source") or Source.UPLOAD
    if source not in UPLOAD_SOURCES:
        raise FakewatchError("invalid_request", "source must be `upload` or `extension` for an uploaded image.")
    session = db()
    callback = callback_url_for(current_key(), _optional_field(request.form.get("callback_url"), "callback_url"),
                                app_settings())
    submission = submit_image(session, data, app_settings(), source=Source(source), api_key_id=current_actor().id,
                              source_url=_optional_field(request.form.get("image_url"), "image_url"),
                              page_url=_optional_field(request.form.get("page_url"), "page_url"),
                              callback_url=callback)
    if idempotent is not None:
        idempotent.remember(session, submission.check.id)
    session.commit()
    if not submission.needs_scoring:
        # Done at once from an earlier score: its callback, if it has one, is owed now.
        if submission.check.callback_url:
            schedule_callbacks(session, app_settings(), check_ids=[submission.check.id])
        return submission.check, True
    return submission.check, send_checks(session, app_settings(), [submission.check.id])


def _submit_url(idempotent: IdempotentRequest | None) -> tuple[Check, bool]:
    """A queued check for a JSON ``{"url"}``: a worker fetches it (with retries and the per-host cap)."""
    body = request.get_json(silent=True)
    if body is None:
        raise Unparseable('The body is not JSON; send JSON like {"url": "https://example.com/photo.jpg"}.')
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise FakewatchError("invalid_request", 'Send JSON like {"url": "https://example.com/photo.jpg"}.')
    session = db()
    callback = callback_url_for(current_key(), _optional_field(body.get("callback_url"), "callback_url"),
                                app_settings())
    check = submit_url(session, body["url"], app_settings(), api_key_id=current_actor().id,
                       page_url=_optional_field(body.get("page_url"), "page_url"), callback_url=callback)
    if idempotent is not None:
        idempotent.remember(session, check.id)
    session.commit()
    return check, send_checks(session, app_settings(), [check.id])


def _submit(idempotent: IdempotentRequest | None) -> tuple[Check, bool]:
    if request.mimetype == "multipart/form-data":
        return _submit_upload(idempotent)
    if request.is_json:
        return _submit_url(idempotent)
    raise FakewatchError("unsupported_format",
                         "Send either multipart/form-data with an `image` file, or JSON with a `url`.", 415)


def _answer(check: Check, replayed: bool = False) -> tuple[ServedCheck, int, dict[str, str]]:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    served = served_check(db(), check)
    if check.status in (CheckStatus.DONE, CheckStatus.FAILED):
        return served, 200, headers
    headers["Location"] = url_for("checks.read_check", check_id=check.id)
    set_retry_after(app_settings().poll_after_s)
    return served, 202, headers


@bp.post("")
@bp.auth_required(auth)
@bp.input(WaitQuery, location="query", arg_name="query")
@bp.output(CheckOut, status_code=202, description="Queued (202), or final (200) when it was ready in time")
@bp.doc(summary="Check an image", responses={**response_doc(
    200, "The check was final within `wait`: done, or failed with the reason", ["application/json"], CheckOut),
    **error_doc(400, 403, 413, 415, 503)})
def create_check(query: dict[str, Any]) -> tuple[ServedCheck, int, dict[str, str]]:
    """A retried request with the same ``Idempotency-Key`` answers with the check the first one created. The wait
    holds one of the process's few wait slots; when none is free, or the broker refused the check (it is sent
    later), the answer is 202 at once with Retry-After and the client polls."""
    current_actor(Permission.SUBMIT)
    idempotent = idempotent_request("checks")
    session = db()
    earlier = idempotent.earlier_resource(session) if idempotent is not None else None
    if earlier is not None:
        return _answer(get_check(session, earlier), replayed=True)
    try:
        check, sent = _submit(idempotent)
    except IntegrityError:
        # A copy of this request (same key) committed first: answer with its check.
        session.rollback()
        earlier = idempotent.earlier_resource(session) if idempotent is not None else None
        if earlier is None:
            raise
        return _answer(get_check(session, earlier), replayed=True)
    wait = min(query["wait"], app_settings().max_wait_s)
    if sent and not check.status.is_final and wait > 0:
        with wait_slot() as waiting:
            if waiting:
                check = wait_for_final(session, check.id, wait, verdict_bell(app_settings()))
    return _answer(check)


@bp.get("/<check_id>")
@bp.auth_required(auth)
@bp.output(CheckOut)
@bp.doc(summary="Read a check")
def read_check(check_id: str) -> ServedCheck:
    session = db()
    return served_check(session, get_check(session, check_id, current_actor()))
