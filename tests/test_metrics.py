"""GET /metrics on the API port (no key, a setting turns it off), the figures it reports, and the request id that
the API answers with and puts on its log lines."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from flask.testing import FlaskClient

from backend.api import create_app
from backend.checks.metrics import REQUEST_ID, JsonFormatter, RequestIdFilter, new_request_id
from backend.settings import Settings
from testbed.images import photo_bytes

pytestmark = pytest.mark.usefixtures("active_model")


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_metrics_need_no_key_and_count_accepted_checks(client: FlaskClient, api_key: str) -> None:
    before = client.get("/metrics")
    assert before.status_code == 200 and before.mimetype == "text/plain"
    accepted = sample(before.text, "fakewatch_checks_accepted_total", 'source="upload"')
    queued = sample(before.text, "fakewatch_queue_depth", 'status="queued"')

    response = client.post("/api/v1/checks", headers={"Authorization": f"Bearer {api_key}"},
                           data={"image": (io.BytesIO(photo_bytes("coffee")), "x.jpg")})
    assert response.status_code in (200, 202)

    after = client.get("/metrics").text
    assert sample(after, "fakewatch_checks_accepted_total", 'source="upload"') == accepted + 1
    # Nothing scores in this test: the new check waits, and the database-backed depth shows it.
    assert sample(after, "fakewatch_queue_depth", 'status="queued"') == queued + 1
    assert re.search(r'fakewatch_model_version\{version="[^"]+"\} 1\.0', after)
    for family in ("fakewatch_verdicts", "fakewatch_check_latency_seconds", "fakewatch_fetch_failures"):
        assert f"# TYPE {family}" in after


def test_metrics_can_be_turned_off(database: Settings) -> None:
    app = create_app(database.model_copy(update={"metrics_enabled": False}))
    assert app.test_client().get("/metrics").status_code == 404


def test_the_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert given.headers["X-Request-ID"] == "trace-123"
    made = client.get("/healthz", headers={"X-Request-ID": "not ok; <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert REQUEST_ID.get() == "-"  # reset after the request


def test_log_lines_are_json_with_the_request_id() -> None:
    record = logging.LogRecord("fakewatch.worker", logging.INFO, __file__, 1, "scored %d", (3,), None)
    token = REQUEST_ID.set(new_request_id("abc-1"))
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "scored 3" and line["request_id"] == "abc-1" and line["level"] == "INFO"
