"""Every error leaves the API as ``{"error": {"code", "message"}}``: never an HTML page, never a bare 500 for bad input."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

import kombu.exceptions as kombu_exc
import redis.exceptions as redis_exc
import sqlalchemy.exc as sqlalchemy_exc
from apiflask import APIFlask, HTTPError
from flask import Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.api.context import app_settings, set_retry_after
from backend.shapes import ErrorOut
from core.decoding import mebibytes
from core.errors import BrokerUnavailable, DatabaseUnavailable, FakewatchError

log = logging.getLogger(__name__)

# A key was sent but matches no active key: said apart from a missing key, so the person fixes the right thing.
UNKNOWN_KEY_MESSAGE = ("This API key is not recognised or was revoked. Check FAKEWATCH_API_KEY, or create a key with "
                       "`fakewatch keys create NAME`.")
# An upload refused as too large is read to its end (and thrown away) up to this many times the limit, so the client,
# which is still sending, receives the 413 instead of a reset connection; beyond it the connection is closed.
DRAIN_FACTOR = 4
DRAIN_CHUNK_BYTES = 256 * 1024
# What a 503 asks the client to wait before trying again.
RETRY_AFTER_S = 5

# Codes for the errors Flask and its extensions raise themselves.
HTTP_CODES = {
    400: ("invalid_request", "The request could not be read."),
    401: ("unauthorized",
          "Send an API key as `Authorization: Bearer <key>`; create one with `fakewatch keys create NAME`."),
    403: ("forbidden", "This key may not do that."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that HTTP method."),
    413: ("too_large", "The request is larger than the server accepts."),
    415: ("unsupported_format", "This content type is not accepted here."),
    422: ("invalid_request", "Some fields of the request are invalid."),
    429: ("rate_limited", "Too many requests for this key; wait a little and try again."),
}


def _body(code: str, message: str, status: int, headers: dict[str, str] | None = None
          ) -> tuple[Response, int, dict[str, str]]:
    return jsonify(ErrorOut().dump({"error": FakewatchError(code, message)})), status, headers or {}


def register(app: APIFlask) -> None:
    @app.error_processor
    def apiflask_error(error: HTTPError) -> tuple[Response, int, dict[str, str]]:
        code, default_message = HTTP_CODES.get(error.status_code, ("error", "The request failed."))
        if error.status_code == 401 and g.get("key_presented"):
            default_message = UNKNOWN_KEY_MESSAGE
        generic = error.message in ("Unauthorized", "Not Found")
        message = error.message if error.message and not generic else default_message
        if error.detail:
            message = f"{message} {_describe_detail(error.detail)}"
        return _body(code, message, error.status_code, dict(cast(Mapping[str, str], error.headers or {})))

    @app.errorhandler(FakewatchError)
    def fakewatch_error(error: FakewatchError) -> tuple[Response, int, dict[str, str]]:
        if isinstance(error, BrokerUnavailable | DatabaseUnavailable) or error.code == "broker_unavailable":
            set_retry_after(RETRY_AFTER_S)
        return _body(error.code, error.message, error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int, dict[str, str]]:
        status = error.code or 500
        code, message = HTTP_CODES.get(status, ("error", error.description or "The request failed."))
        headers = dict(error.get_headers()) if status in (405, 429) else {}
        if status == 413:
            message = "The request is larger than the server accepts: images may be at most " \
                      f"{mebibytes(app_settings().max_image_bytes, limit=True)}, videos " \
                      f"{mebibytes(app_settings().video_max_bytes, limit=True)}."
            if not _drain_body(DRAIN_FACTOR * (app_settings().max_upload_bytes + 64 * 1024)):
                headers["Connection"] = "close"
        if status == 429:
            message = f"Too many requests for this key ({error.description}); wait a little and try again."
        headers.pop("Content-Type", None)
        return _body(code, message, status, headers)

    @app.errorhandler(sqlalchemy_exc.OperationalError)
    @app.errorhandler(sqlalchemy_exc.InterfaceError)
    @app.errorhandler(sqlalchemy_exc.TimeoutError)
    def database_error(error: Exception) -> tuple[Response, int, dict[str, str]]:
        # The database is down, unreachable, out of connections, or (the embedded default) its file is locked.
        log.warning("database unavailable: %s", error)
        unavailable = DatabaseUnavailable("The database is not answering; nothing was changed. Try again in a "
                                          "few seconds.")
        set_retry_after(RETRY_AFTER_S)
        return _body(unavailable.code, unavailable.message, unavailable.status)

    @app.errorhandler(redis_exc.ConnectionError)
    @app.errorhandler(redis_exc.TimeoutError)
    @app.errorhandler(kombu_exc.OperationalError)
    def broker_error(error: Exception) -> tuple[Response, int, dict[str, str]]:
        log.warning("broker unavailable: %s", error)
        unavailable = BrokerUnavailable("The broker (Redis) is not answering; try again in a few seconds.")
        set_retry_after(RETRY_AFTER_S)
        return _body(unavailable.code, unavailable.message, unavailable.status)

    @app.errorhandler(Exception)
    def unexpected_error(_error: Exception) -> tuple[Response, int, dict[str, str]]:
        log.exception("unhandled error")
        return _body("internal_error", "The server failed on this request; it has been logged. Try again, "
                     "and report it if it repeats.", 500)


def _drain_body(cap: int) -> bool:
    """Read what is left of the request body and drop it, up to ``cap`` bytes; True when it was all read. A server
    that answers before reading an upload and then closes makes the client's TCP stack see a reset while it is
    still sending (curl and requests report a broken pipe, not the 413), unless it sent Expect: 100-continue."""
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return True
    declared = request.content_length
    if declared is not None and declared > cap:
        return False
    left = declared if declared is not None else cap
    try:
        while left > 0:
            chunk = stream.read(min(DRAIN_CHUNK_BYTES, left))
            if not chunk:
                return True
            left -= len(chunk)
    except OSError:
        return False
    return declared is not None


def _describe_detail(detail: object) -> str:
    """Flatten marshmallow's {location: {field: [messages]}} into one sentence."""
    parts: list[str] = []
    if isinstance(detail, dict):
        for fields in detail.values():
            if isinstance(fields, dict):
                for field, messages in fields.items():
                    text = "; ".join(messages) if isinstance(messages, list) else str(messages)
                    parts.append(f"{field}: {text}")
    return " ".join(parts)
