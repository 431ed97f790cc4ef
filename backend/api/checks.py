"""POST /api/v1/checks and GET /api/v1/checks/<id>."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import request, url_for

from backend.api.auth import auth
from backend.api.schemas import CheckOut, WaitQuery
from backend.api.session import db
from backend.checks import check_to_dict, get_check, submit_image, wait_for_final
from backend.errors import FakewatchError
from backend.fetch import fetch_image, validate_url
from backend.queue import enqueue_scoring
from backend.settings import get_settings

bp = APIBlueprint("checks", __name__, url_prefix="/api/v1/checks", tag="Checks")

MAX_FIELD_CHARS = 2048

CHECK_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary"},
                "image_url": {"type": "string", "description": "Where the image was found (not fetched)."},
                "page_url": {"type": "string"},
                "source": {"type": "string", "enum": ["upload", "extension"]}}}},
            "application/json": {"schema": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string", "description": "An http(s) image URL for the server to fetch."},
                "page_url": {"type": "string"}}}},
        },
    }
}


def _optional_field(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise FakewatchError("invalid_request", f"{name} must be text of at most {MAX_FIELD_CHARS} characters.")
    return value


def _read_submission() -> tuple[bytes, dict[str, Any]]:
    """The image bytes and check fields, from either a multipart upload or a JSON ``{"url"}``."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise FakewatchError("invalid_request", "Send the image as a multipart file field named `image`.")
        data = upload.read()
        if not data:
            raise FakewatchError("invalid_image", "The uploaded file is empty.")
        source = request.form.get("source") or "upload"
        if source not in ("upload", "extension"):
            raise FakewatchError("invalid_request", "source must be `upload` or `extension` for an uploaded image.")
        return data, {"source": source,
                      "source_url": _optional_field(request.form.get("image_url"), "image_url"),
                      "page_url": _optional_field(request.form.get("page_url"), "page_url")}
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise FakewatchError("invalid_request", 'Send JSON like {"url": "https://example.com/photo.jpg"}.')
        url = validate_url(body["url"])
        fetched = fetch_image(url)
        return fetched.data, {"source": "url", "source_url": url, "info": fetched.info,
                              "page_url": _optional_field(body.get("page_url"), "page_url")}
    raise FakewatchError("unsupported_format",
                         "Send either multipart/form-data with an `image` file, or JSON with a `url`.", 415)


@bp.post("")
@bp.auth_required(auth)
@bp.input(WaitQuery, location="query", arg_name="query")
@bp.output(CheckOut, status_code=202, description="Queued (202), or the verdict (200) when it was ready in time")
@bp.doc(summary="Check an image", responses={200: "The verdict was ready within `wait`", 202: "Queued"})
def create_check(query: dict[str, Any]):  # type: ignore[no-untyped-def]
    data, fields = _read_submission()
    session = db()
    submission = submit_image(session, data, api_key_id=auth.current_user.id, **fields)
    session.commit()
    check = submission.check
    if submission.needs_scoring:
        enqueue_scoring([check.id])
        wait = min(query["wait"], get_settings().max_wait_s)
        if wait > 0:
            check = wait_for_final(session, check.id, wait)
    body = check_to_dict(session, check)
    if check.status in ("done", "failed"):
        return body, 200
    return body, 202, {"Location": url_for("checks.read_check", check_id=check.id)}


@bp.get("/<check_id>")
@bp.auth_required(auth)
@bp.output(CheckOut)
@bp.doc(summary="Read a check")
def read_check(check_id: str):  # type: ignore[no-untyped-def]
    session = db()
    return check_to_dict(session, get_check(session, check_id))

