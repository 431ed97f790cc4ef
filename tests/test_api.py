"""The API in-process (Flask test client) on a fresh embedded-default database: auth, refusals, shapes, docs.

Scoring itself is covered end to end in test_pipeline.py; here a model is registered but no worker runs."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

import backend.api.checks
from backend.api import create_app
from backend.identity.keys import create_key, revoke_key
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ApiKey, Check, ModelVersion
from testbed.images import photo_bytes
from tests.actors import OPERATOR

# Every test here runs on a fresh embedded database with the tiny model active, and no worker.
pytestmark = pytest.mark.usefixtures("active_model")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: FlaskClient, key: str, data: bytes, **extra: str) -> TestResponse:
    return client.post("/api/v1/checks", headers=auth(key), data={"image": (io.BytesIO(data), "x.jpg"), **extra})


def assert_error(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, "errors are JSON, never HTML"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 20, "a message a person can act on"


def test_health_needs_no_key(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-key", "Basic dXNlcjpwYXNz", "fw_abc"])
def test_checks_refuse_missing_or_wrong_keys(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    assert_error(client.post("/api/v1/checks", headers=headers), 401, "unauthorized")
    assert_error(client.get("/api/v1/checks/abc", headers=headers), 401, "unauthorized")


def test_revoked_key_is_refused(client: FlaskClient, api_key: str, database: Settings) -> None:
    key = api_key
    with session_scope(database) as session:
        revoke_key(session, "tests", actor=OPERATOR)
    assert_error(upload(client, key, photo_bytes()), 401, "unauthorized")


def test_upload_is_accepted_and_queued(client: FlaskClient, api_key: str, database: Settings) -> None:
    key = api_key
    response = upload(client, key, photo_bytes(), page_url="https://example.org/a", source="extension")
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/checks/{body['id']}")
    assert body["status"] == "queued" and body["source"] == "extension" and body["page_url"] == "https://example.org/a"
    assert set(body) >= {"id", "status", "verdict", "score", "confidence", "flagged", "cached", "model_version", "image",
                         "source", "source_url", "page_url", "batch_id", "review", "error", "created_at", "finished_at"}
    again = client.get(f"/api/v1/checks/{body['id']}", headers=auth(key))
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    with session_scope(database) as session:
        row = session.get(Check, body["id"])
        assert row is not None and row.api_key_id == session.query(ApiKey.id).filter_by(name="tests").scalar()


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 422, "invalid_image"),
    (b"not an image at all", 415, "unsupported_format"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported_format"),
    (photo_bytes()[:4000], 422, "invalid_image"),
])
def test_bad_images_are_refused(client: FlaskClient, api_key: str, data: bytes, status: int, code: str) -> None:
    key = api_key
    assert_error(upload(client, key, data), status, code)


def test_oversized_request_is_refused_at_the_edge(client: FlaskClient, api_key: str) -> None:
    key = api_key
    assert_error(upload(client, key, b"\xff" * (21 * 1024 * 1024)), 413, "too_large")


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"data": "plain text", "content_type": "text/plain"}, 415, "unsupported_format"),
    ({"json": {"nourl": 1}}, 422, "invalid_request"),
    ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_request"),
    ({"json": {"url": "ftp://example.org/a.jpg"}}, 422, "invalid_url"),
    ({"json": {"url": "http://169.254.169.254/latest/meta-data"}}, 403, "blocked_address"),
    ({"json": {"url": "http://[::1]/a.png"}}, 403, "blocked_address"),
    ({"data": {"other": (io.BytesIO(b"x"), "x.jpg")}, "content_type": "multipart/form-data"}, 422, "invalid_request"),
])
def test_malformed_requests_get_clear_errors(client: FlaskClient, api_key: str, kwargs: dict[str, Any],
                                            status: int, code: str) -> None:
    key = api_key
    assert_error(client.post("/api/v1/checks", headers=auth(key), **kwargs), status, code)


def test_a_url_check_is_queued_for_a_worker_to_fetch(client: FlaskClient, api_key: str, database: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The API neither connects to the URL nor waits on it: the check is a queued row, like a batch item."""
    connections: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda _self, address: connections.append(address))
    allowed = create_app(database.model_copy(update={"fetch_allowlist": ("127.0.0.1:9999",)})).test_client()
    response = allowed.post("/api/v1/checks?wait=0.2", headers=auth(api_key),
                            json={"url": "http://127.0.0.1:9999/photo.jpg", "page_url": "https://example.org/p"})
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["status"], body["source"], body["image"], body["error"]) == ("queued", "url", None, None)
    assert body["source_url"] == "http://127.0.0.1:9999/photo.jpg" and body["page_url"] == "https://example.org/p"
    assert connections == [], "the address is checked at submission, never connected to"
    # A host that does not resolve now is not refused at once: the worker's fetch reports what it finds then.
    def no_dns(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    later = client.post("/api/v1/checks", headers=auth(api_key), json={"url": "http://unknown.example/a.jpg"})
    assert later.status_code == 202 and later.get_json()["status"] == "queued"
    with session_scope(database) as session:
        rows = session.query(Check).filter(Check.source == "url").all()
        assert len(rows) == 2 and all(row.image_id is None and row.status == "queued" for row in rows)


def test_wait_is_capped_by_the_server_setting(client: FlaskClient, api_key: str, database: Settings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key = api_key
    assert_error(client.post("/api/v1/checks?wait=-1", headers=auth(key),
                             data={"image": (io.BytesIO(photo_bytes()), "x")}), 422, "invalid_request")
    # No worker runs here, so the check stays queued and the request waits the whole capped time.
    client = create_app(database.model_copy(update={"max_wait_s": 0.3})).test_client()
    started = time.monotonic()
    response = client.post("/api/v1/checks?wait=60", headers=auth(key), data={"image": (io.BytesIO(photo_bytes()), "x")})
    assert response.status_code == 202 and time.monotonic() - started < 5
    # A cap raised above 10 s is honoured: nothing else (schema, client) clips the wait first.
    waits: list[float] = []
    real_wait = backend.api.checks.wait_for_final

    def recording_wait(session: Any, check_id: str, timeout_s: float, bell: Any = None) -> Check:
        waits.append(timeout_s)
        return real_wait(session, check_id, 0)

    monkeypatch.setattr(backend.api.checks, "wait_for_final", recording_wait)
    client = create_app(database.model_copy(update={"max_wait_s": 30.0})).test_client()
    for wait in (15, 60):
        response = client.post(f"/api/v1/checks?wait={wait}", headers=auth(key),
                               data={"image": (io.BytesIO(photo_bytes()), "x")})
        assert response.status_code == 202
    assert waits == [15, 30]


def test_unknown_ids_and_paths_are_json_404(client: FlaskClient, api_key: str) -> None:
    key = api_key
    assert_error(client.get("/api/v1/checks/nope", headers=auth(key)), 404, "not_found")
    assert_error(client.get("/api/v1/images/" + "0" * 64, headers=auth(key)), 404, "not_found")
    assert_error(client.get("/api/v1/images/../../etc/passwd", headers=auth(key)), 404, "not_found")
    assert_error(client.get("/no/such/page"), 404, "not_found")
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")


def test_no_active_model_is_refused_and_readyz_says_why(client: FlaskClient, api_key: str,
                                                        database: Settings) -> None:
    key = api_key
    with session_scope(database) as session:
        session.execute(update(ModelVersion).values(active=False))
    assert_error(upload(client, key, photo_bytes()), 503, "no_active_model")
    ready = client.get("/readyz", headers=auth(key))
    assert ready.status_code == 503 and "model" in ready.get_json()["problems"]


def test_cors_allows_extensions_only(client: FlaskClient) -> None:
    for origin in ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", "moz-extension://1234abcd-12ab-34cd-56ef-1234567890ab"):
        response = client.options("/api/v1/checks", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "authorization"})
        assert response.headers.get("Access-Control-Allow-Origin") == origin
    response = client.options("/api/v1/checks", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_rate_limit_per_key(database: Settings) -> None:
    with session_scope(database) as session:
        _, key = create_key(session, "limited", actor=OPERATOR)
        _, other = create_key(session, "other", actor=OPERATOR)
    client = create_app(database.model_copy(update={"rate_limit": "3 per minute"}),
                        test_config={"TESTING": True}).test_client()
    statuses = [client.get("/api/v1/checks/x", headers=auth(key)).status_code for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    assert_error(client.get("/api/v1/checks/x", headers=auth(key)), 429, "rate_limited")
    assert client.get("/api/v1/checks/x", headers=auth(other)).status_code == 404, "limits are per key"


def test_openapi_spec_and_docs_are_served(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    assert {"/api/v1/checks", "/api/v1/checks/{check_id}", "/api/v1/images/{sha256}", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/api/v1/checks"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_openapi_spec_gives_every_endpoint_its_response_shape(app: Any, client: FlaskClient) -> None:
    """Every route is in the spec, and every operation's success answer has a body described, from the same
    schemas the responses are serialised with; error answers carry the error shape actually sent."""
    spec = client.get("/api/openapi.json").get_json()
    # A rule's converter (``<int:version_id>``) is not part of the spec's path template.
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule)), method.lower()) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"} if not rule.endpoint.startswith(("static", "openapi"))
              and rule.endpoint not in ("docs", "spec", "swagger_ui_static")}
    documented = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert routes <= documented, f"routes missing from the spec: {routes - documented}"
    for path, method in documented:
        responses = spec["paths"][path][method]["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, f"{method} {path} documents no success response"
        for code in success:
            content = responses[code].get("content")
            assert content and all(entry.get("schema") for entry in content.values()), (method, path, code)
    schemas = spec["components"]["schemas"]
    assert not [name for name in schemas if name[-1].isdigit()], "each shape is documented once"
    check = schemas["CheckOut"]["properties"]
    assert check["status"]["enum"] == ["queued", "running", "done", "failed", "cancelled"]
    assert "real" in str(check["verdict"]) and "ReviewOut" in str(check["review"])
    run = spec["paths"]["/api/v1/training-runs/{run_id}"]["get"]["responses"]["200"]["content"]
    assert run["application/json"]["schema"]["$ref"].endswith("/RunOut")
    assert set(schemas["RunOut"]["properties"]) >= {"status", "epoch", "history", "candidate", "comparison"}
    unauthorized = spec["paths"]["/api/v1/checks"]["post"]["responses"]["401"]["content"]["application/json"]
    assert unauthorized["schema"]["$ref"].endswith("/ErrorOut")


def test_api_process_never_imports_tensorflow() -> None:
    code = ("import sys; from backend.api import create_app; import backend.wsgi, worker.tasks; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
