"""The API in-process (Flask test client) on a fresh embedded-default database: auth, refusals, shapes, docs.

Scoring itself is covered end to end in test_pipeline.py; here a model is registered but no worker runs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.fixtures_images import photo_bytes


@pytest.fixture
def app_and_key(settings_env: Path, tiny_model_path: Path) -> Iterator[tuple[FlaskClient, str]]:
    from backend.api import create_app
    from backend.db import session_scope
    from backend.keys import create_key
    from backend.migrate import upgrade_database
    from backend.model_versions import register_model

    upgrade_database()
    with session_scope() as session:
        register_model(session, tiny_model_path, activate=True)
        _, key = create_key(session, "tests")
    app = create_app(test_config={"TESTING": True})
    yield app.test_client(), key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: FlaskClient, key: str, data: bytes, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/checks", headers=auth(key), data={"image": (io.BytesIO(data), "x.jpg"), **extra})


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, "errors are JSON, never HTML"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 20, "a message a person can act on"


def test_health_needs_no_key(app_and_key: tuple[FlaskClient, str]) -> None:
    client, _ = app_and_key
    assert client.get("/healthz").get_json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-key", "Basic dXNlcjpwYXNz", "fw_abc"])
def test_checks_refuse_missing_or_wrong_keys(app_and_key: tuple[FlaskClient, str], header: str | None) -> None:
    client, _ = app_and_key
    headers = {"Authorization": header} if header else {}
    assert_error(client.post("/api/v1/checks", headers=headers), 401, "unauthorized")
    assert_error(client.get("/api/v1/checks/abc", headers=headers), 401, "unauthorized")


def test_revoked_key_is_refused(app_and_key: tuple[FlaskClient, str]) -> None:
    from backend.db import session_scope
    from backend.keys import revoke_key

    client, key = app_and_key
    with session_scope() as session:
        revoke_key(session, "tests")
    assert_error(upload(client, key, photo_bytes()), 401, "unauthorized")


def test_upload_is_accepted_and_queued(app_and_key: tuple[FlaskClient, str]) -> None:
    client, key = app_and_key
    response = upload(client, key, photo_bytes(), page_url="https://example.org/a", source="extension")
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/checks/{body['id']}")
    assert body["status"] == "queued" and body["source"] == "extension" and body["page_url"] == "https://example.org/a"
    assert set(body) >= {"id", "status", "verdict", "score", "confidence", "flagged", "cached", "model_version", "image",
                         "source", "source_url", "page_url", "batch_id", "review", "error", "created_at", "finished_at"}
    again = client.get(f"/api/v1/checks/{body['id']}", headers=auth(key))
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    from backend.db import session_scope
    from backend.schema import ApiKey, Check

    with session_scope() as session:
        row = session.get(Check, body["id"])
        assert row is not None and row.api_key_id == session.query(ApiKey.id).filter_by(name="tests").scalar()


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 400, "invalid_image"),
    (b"not an image at all", 415, "unsupported_format"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported_format"),
    (photo_bytes()[:4000], 400, "invalid_image"),
])
def test_bad_images_are_refused(app_and_key: tuple[FlaskClient, str], data: bytes, status: int, code: str) -> None:
    client, key = app_and_key
    assert_error(upload(client, key, data), status, code)


def test_oversized_request_is_refused_at_the_edge(app_and_key: tuple[FlaskClient, str]) -> None:
    client, key = app_and_key
    assert_error(upload(client, key, b"\xff" * (21 * 1024 * 1024)), 413, "too_large")


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"data": "plain text", "content_type": "text/plain"}, 415, "unsupported_format"),
    ({"json": {"nourl": 1}}, 400, "invalid_request"),
    ({"json": {"url": "ftp://example.org/a.jpg"}}, 400, "invalid_url"),
    ({"json": {"url": "http://169.254.169.254/latest/meta-data"}}, 403, "blocked_address"),
    ({"json": {"url": "http://[::1]/a.png"}}, 403, "blocked_address"),
    ({"data": {"other": (io.BytesIO(b"x"), "x.jpg")}, "content_type": "multipart/form-data"}, 400, "invalid_request"),
])
def test_malformed_requests_get_clear_errors(app_and_key: tuple[FlaskClient, str], kwargs: dict, status: int,  # type: ignore[type-arg]
                                            code: str) -> None:
    client, key = app_and_key
    assert_error(client.post("/api/v1/checks", headers=auth(key), **kwargs), status, code)


def test_wait_is_capped_by_the_server_setting(app_and_key: tuple[FlaskClient, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import backend.api.checks
    from backend.settings import get_settings

    client, key = app_and_key
    assert_error(client.post("/api/v1/checks?wait=-1", headers=auth(key),
                             data={"image": (io.BytesIO(photo_bytes()), "x")}), 422, "invalid_request")
    # No worker runs here, so the check stays queued and the request waits the whole capped time.
    monkeypatch.setenv("FAKEWATCH_MAX_WAIT_S", "0.3")
    get_settings.cache_clear()
    started = time.monotonic()
    response = client.post("/api/v1/checks?wait=60", headers=auth(key), data={"image": (io.BytesIO(photo_bytes()), "x")})
    assert response.status_code == 202 and time.monotonic() - started < 5
    # A cap raised above 10 s is honoured: nothing else (schema, client) clips the wait first.
    waits: list[float] = []
    real_wait = backend.api.checks.wait_for_final
    monkeypatch.setattr(backend.api.checks, "wait_for_final",
                        lambda session, check_id, timeout_s: waits.append(timeout_s) or real_wait(session, check_id, 0))
    monkeypatch.setenv("FAKEWATCH_MAX_WAIT_S", "30")
    get_settings.cache_clear()
    for wait in (15, 60):
        response = client.post(f"/api/v1/checks?wait={wait}", headers=auth(key),
                               data={"image": (io.BytesIO(photo_bytes()), "x")})
        assert response.status_code == 202
    assert waits == [15, 30]


def test_unknown_ids_and_paths_are_json_404(app_and_key: tuple[FlaskClient, str]) -> None:
    client, key = app_and_key
    assert_error(client.get("/api/v1/checks/nope", headers=auth(key)), 404, "not_found")
    assert_error(client.get("/api/v1/images/" + "0" * 64, headers=auth(key)), 404, "not_found")
    assert_error(client.get("/api/v1/images/../../etc/passwd", headers=auth(key)), 404, "not_found")
    assert_error(client.get("/no/such/page"), 404, "not_found")
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")


def test_no_active_model_is_refused_and_readyz_says_why(app_and_key: tuple[FlaskClient, str]) -> None:
    from sqlalchemy import update

    from backend.db import session_scope
    from backend.schema import ModelVersion

    client, key = app_and_key
    with session_scope() as session:
        session.execute(update(ModelVersion).values(active=False))
    assert_error(upload(client, key, photo_bytes()), 503, "no_active_model")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "model" in ready.get_json()["problems"]


def test_cors_allows_extensions_only(app_and_key: tuple[FlaskClient, str]) -> None:
    client, _ = app_and_key
    for origin in ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", "moz-extension://1234abcd-12ab-34cd-56ef-1234567890ab"):
        response = client.options("/api/v1/checks", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "authorization"})
        assert response.headers.get("Access-Control-Allow-Origin") == origin
    response = client.options("/api/v1/checks", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_rate_limit_per_key(settings_env: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.api import create_app
    from backend.db import session_scope
    from backend.keys import create_key
    from backend.migrate import upgrade_database
    from backend.settings import get_settings

    monkeypatch.setenv("FAKEWATCH_RATE_LIMIT", "3 per minute")
    get_settings.cache_clear()
    upgrade_database()
    with session_scope() as session:
        _, key = create_key(session, "limited")
        _, other = create_key(session, "other")
    client = create_app(test_config={"TESTING": True}).test_client()
    statuses = [client.get("/api/v1/checks/x", headers=auth(key)).status_code for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    assert_error(client.get("/api/v1/checks/x", headers=auth(key)), 429, "rate_limited")
    assert client.get("/api/v1/checks/x", headers=auth(other)).status_code == 404, "limits are per key"


def test_openapi_spec_and_docs_are_served(app_and_key: tuple[FlaskClient, str]) -> None:
    client, _ = app_and_key
    spec = client.get("/api/openapi.json").get_json()
    assert {"/api/v1/checks", "/api/v1/checks/{check_id}", "/api/v1/images/{sha256}", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/api/v1/checks"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_api_process_never_imports_tensorflow() -> None:
    import subprocess
    import sys

    code = ("import sys; from backend.api import create_app; import backend.wsgi, worker.tasks; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
