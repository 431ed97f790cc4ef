"""``GET /metrics`` (Prometheus text, no key; off with ``FAKEWATCH_METRICS_ENABLED=false``) and the request id:
taken from the client's ``X-Request-ID`` or made here, put on every log line of the request, sent with the scoring
messages it enqueues (so the worker's lines carry it too), and returned in the response's ``X-Request-ID``."""

from __future__ import annotations

import contextvars

from apiflask import APIBlueprint, APIFlask
from flask import Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from backend.api.context import EXTENSION
from backend.checks.metrics import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    install_structured_logs,
    new_request_id,
    state_registry,
)
from backend.settings import Settings
from backend.shapes import response_doc

bp = APIBlueprint("metrics", __name__, tag="Health")
STATE = "fakewatch.metrics_state"


@bp.get("/metrics")
@bp.doc(summary="Prometheus metrics (no key needed; FAKEWATCH_METRICS_ENABLED=false turns them off)",
        responses=response_doc(200, "The process's counters and the database-backed gauges, in Prometheus' text "
                                    "format (fakewatch_*)", [CONTENT_TYPE_LATEST.split(";")[0]], {"type": "string"}))
def metrics() -> Response:
    # The process's counters, then this app's database-backed figures (an app per settings value, as in tests).
    body = generate_latest(REGISTRY) + generate_latest(current_app.extensions[STATE])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _start_request() -> None:
    g.request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    g.request_id_token = REQUEST_ID.set(g.request_id)


def _end_request(response: Response) -> Response:
    if "request_id" in g:
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


def _reset_request(_error: BaseException | None) -> None:
    token: contextvars.Token[str] | None = g.pop("request_id_token", None)
    if token is not None:
        REQUEST_ID.reset(token)


def install(app: APIFlask, settings: Settings) -> APIBlueprint | None:
    """Add the request id hooks, and the metrics endpoint unless turned off (returned, for the limiter to exempt)."""
    app.before_request(_start_request)
    app.after_request(_end_request)
    app.teardown_request(_reset_request)
    if not settings.metrics_enabled:
        return None
    app.extensions[STATE] = state_registry(settings)
    app.register_blueprint(bp)
    return bp


def log_as_configured(app: APIFlask) -> None:
    """JSON log lines with the request id (FAKEWATCH_LOG_FORMAT=json, the default) for the API server process;
    left out of ``create_app`` so an embedding process (tests, `fakewatch up`) keeps its own logging."""
    settings: Settings = app.extensions[EXTENSION]
    if settings.log_format == "json":
        install_structured_logs()
