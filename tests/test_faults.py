"""What the API does when its services fail, and the small holes around it: a Redis outage (a redis-server of the
test's own, stopped and started again), an unreachable database, retried POSTs with an Idempotency-Key, leases
that a live worker renews and a dead one lets lapse, bounded waits, and the headers and limits of issue 18.

In-process: the app from ``create_app`` on a fresh embedded database with the tiny model active, no worker (checks
stay queued). The real worker kills are in test_pipeline.py."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from backend.api import create_app
from backend.checks.dispatch import SCORING_QUEUE
from backend.checks.idempotency import KEEP_FOR, forget_old_keys
from backend.checks.service import claim_checks, submit_image, sweep_stuck_checks
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Batch, Check, IdempotencyKey, utcnow
from testbed.images import distinct_photos, photo_bytes
from testbed.stack import OwnRedis, free_port
from worker.leases import holding_leases
from worker.sweeper import sweep_once

pytestmark = pytest.mark.usefixtures("active_model")


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def upload(client: FlaskClient, key: str, data: bytes, headers: dict[str, str] | None = None,
           wait: float = 0) -> TestResponse:
    return client.post(f"/api/v1/checks?wait={wait}", headers={**auth(key), **(headers or {})},
                       data={"image": (io.BytesIO(data), "x.jpg")})


def error_code(response: TestResponse) -> str:
    assert response.is_json, response.get_data(as_text=True)
    code: str = response.get_json()["error"]["code"]
    return code


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# --- outages ------------------------------------------------------------------------------------------------


def test_a_redis_outage_keeps_reads_up_and_accepted_checks_are_sent_when_it_is_back(
        database: Settings, api_key: str, own_redis: OwnRedis) -> None:
    """Redis carries the broker and the limiter's counters. While it is down: GETs answer (the limiter fails open),
    an upload and a batch are accepted with their ids (202) and flagged unsent, /readyz says 503; once it is back
    the sweeper sends them, and nothing answered 500."""
    settings = database.model_copy(update={"broker_url": own_redis.url + "/0"})
    client = create_app(settings, test_config={"TESTING": True}).test_client()
    queue = own_redis.client()
    photos = distinct_photos(2, size=96)
    before = upload(client, api_key, photos[0])
    assert before.status_code == 202 and queue.llen(SCORING_QUEUE) == 1

    own_redis.stop()
    started = time.monotonic()
    read = client.get(f"/api/v1/checks/{before.get_json()['id']}", headers=auth(api_key))
    assert read.status_code == 200, read.get_data(as_text=True)
    accepted = upload(client, api_key, photos[1])
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    assert accepted.headers["Retry-After"] and accepted.get_json()["status"] == "queued"
    batch = client.post("/api/v1/batches", headers=auth(api_key),
                        json={"urls": ["https://example.org/a.jpg", "https://example.org/b.jpg"]})
    assert batch.status_code == 202, batch.get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json() == {"status": "not_ready"}, "no details without a key"
    detailed = client.get("/readyz", headers=auth(api_key)).get_json()
    assert set(detailed["problems"]) == {"broker"}
    assert time.monotonic() - started < 30, "an outage answers promptly, it does not hang requests"
    with session_scope(settings) as session:
        unsent = set(session.scalars(select(Check.id).where(Check.unsent.is_(True))))
    assert accepted.get_json()["id"] in unsent and len(unsent) == 3, "the upload and the batch's two items"

    with pytest.raises(Exception):  # noqa: B017 - still down: the sweeper's pass fails and is retried later
        sweep_once(settings)
    own_redis.start()  # empty, as after a crash without persistence
    assert sweep_once(settings) == 3
    assert own_redis.client().llen(SCORING_QUEUE) >= 1
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Check).where(Check.unsent.is_(True))) == 0
    assert client.get("/readyz").status_code == 200


def test_an_unreachable_database_answers_503_database_unavailable(settings: Settings) -> None:
    gone = settings.model_copy(update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"})
    client = create_app(gone, test_config={"TESTING": True}).test_client()
    for response in (client.get("/api/v1/checks/abc", headers=auth("fw_" + "x" * 40)),
                     client.post("/api/v1/checks", headers=auth("fw_" + "x" * 40), json={"url": "https://a.org/x.jpg"}),
                     client.get("/api/v1/batches", headers=auth("fw_" + "x" * 40))):
        assert response.status_code == 503 and error_code(response) == "database_unavailable"
        assert response.headers["Retry-After"] and "database" in response.get_json()["error"]["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json() == {"status": "not_ready"}
    assert client.get("/healthz").status_code == 200


# --- idempotent POSTs ---------------------------------------------------------------------------------------


def test_a_post_sent_again_with_its_idempotency_key_is_accepted_once(client: FlaskClient, api_key: str,
                                                                     database: Settings) -> None:
    photo, other = distinct_photos(2, size=96)
    first = upload(client, api_key, photo, {"Idempotency-Key": "retry-1"})
    again = upload(client, api_key, photo, {"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    conflict = upload(client, api_key, other, {"Idempotency-Key": "retry-1"})
    assert conflict.status_code == 409 and error_code(conflict) == "idempotency_conflict"
    assert upload(client, api_key, photo, {"Idempotency-Key": "retry-2"}).get_json()["id"] != first.get_json()["id"]
    assert error_code(upload(client, api_key, photo, {"Idempotency-Key": "x" * 201})) == "invalid_request"

    urls = {"urls": ["https://example.org/1.jpg", "https://example.org/2.jpg"]}
    batches = [client.post("/api/v1/batches", headers=auth(api_key, **{"Idempotency-Key": "batch-1"}), json=urls)
               for _ in range(2)]
    assert [response.status_code for response in batches] == [202, 202]
    assert batches[0].get_json()["id"] == batches[1].get_json()["id"]
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 1
        assert session.scalar(select(func.count()).select_from(Check).where(Check.batch_id.is_not(None))) == 2
        assert session.scalar(select(func.count()).select_from(Check).where(Check.batch_id.is_(None))) == 2
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 3
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "retry-1")
                        .values(created_at=utcnow() - KEEP_FOR - timedelta(minutes=1)))
    with session_scope(database) as session:
        assert forget_old_keys(session) == 1, "a day-old key is forgotten (the sweeper does it)"


def test_copies_of_one_request_racing_each_other_create_one_check(app: object, api_key: str,
                                                                  database: Settings) -> None:
    photo = distinct_photos(1, size=96)[0]
    answers: list[str] = []

    def send() -> None:
        client = app.test_client()  # type: ignore[attr-defined]
        response = upload(client, api_key, photo, {"Idempotency-Key": "race"})
        assert response.status_code == 202, response.get_data(as_text=True)
        answers.append(response.get_json()["id"])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4 and len(set(answers)) == 1
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(Check)) == 1


# --- leases -------------------------------------------------------------------------------------------------


def test_a_live_workers_lease_holds_and_a_dead_workers_lapses(database: Settings) -> None:
    """While the holder renews (the worker's lease thread), neither the sweeper nor another worker takes its
    checks, for longer than the lease itself; once renewals stop (the worker died), the next sweep re-queues them."""
    settings = database.model_copy(update={"lease_s": 1.2})
    with session_scope(settings) as session:
        ids = sorted(submit_image(session, data, settings).check.id for data in distinct_photos(2, size=96))
    with session_scope(settings) as session:
        assert len(claim_checks(session, ids, stale_after_s=3600, lease_s=settings.lease_s)) == 2
    with holding_leases(ids, settings):
        deadline = time.monotonic() + 3 * settings.lease_s
        while time.monotonic() < deadline:
            with session_scope(settings) as session:
                assert sweep_stuck_checks(session, settings) == [], "a renewed lease is never taken"
                assert claim_checks(session, ids, stale_after_s=3600, lease_s=settings.lease_s) == []
            time.sleep(0.2)
    time.sleep(settings.lease_s + 0.3)
    with session_scope(settings) as session:
        assert sorted(sweep_stuck_checks(session, settings)) == ids
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Check).where(Check.id.in_(ids))))
        assert {row.status for row in rows} == {"queued"} and all(row.lease_expires_at is None for row in rows)


# --- waits never hold every thread --------------------------------------------------------------------------


def test_waits_beyond_the_slots_answer_at_once_and_reads_stay_fast(database: Settings, api_key: str) -> None:
    settings = database.model_copy(update={"wait_slots": 1, "max_wait_s": 3.0})
    app = create_app(settings, test_config={"TESTING": True})
    first_photo, second_photo = distinct_photos(2, size=96)
    held: list[float] = []

    def waiting_upload() -> None:
        started = time.monotonic()
        response = upload(app.test_client(), api_key, first_photo, wait=3)
        assert response.status_code == 202
        held.append(time.monotonic() - started)

    waiter = threading.Thread(target=waiting_upload)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    second = upload(app.test_client(), api_key, second_photo, wait=3)
    assert second.status_code == 202 and second.headers["Retry-After"] == "1"
    read = app.test_client().get(f"/api/v1/checks/{second.get_json()['id']}", headers=auth(api_key))
    assert read.status_code == 200 and time.monotonic() - started < 1.5, "no slot free: answered at once"
    waiter.join(timeout=30)
    assert held and held[0] >= 2.5, "the one slot's holder waited for its verdict"


# --- the smaller holes --------------------------------------------------------------------------------------


def test_stored_images_are_served_as_attachments_never_sniffed(client: FlaskClient, api_key: str) -> None:
    # A GIF with an HTML tail: served byte for byte, but never as something a browser would run.
    data = photo_bytes("astronaut", fmt="GIF", size=64) + b"<script>alert(1)</script>"
    body = upload(client, api_key, data).get_json()
    response = client.get(f"/api/v1/images/{body['image']['sha256']}", headers=auth(api_key))
    assert response.status_code == 200 and response.data == data
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in response.headers["Content-Security-Policy"]
    # Authenticated, tenant-scoped bytes: a browser may keep them, a shared proxy must not.
    assert "private" in response.headers["Cache-Control"] and "public" not in response.headers["Cache-Control"]


def test_every_answer_is_nosniff_and_only_pauses_carry_retry_after(database: Settings, api_key: str) -> None:
    """JSON answers, the spec and /docs are nosniff; Retry-After only where it means a pause (429, 503, and a
    202's poll interval), never the rate limiter's window on a 200 or a 404."""
    client = create_app(database.model_copy(update={"rate_limit": "3 per minute"}),
                        test_config={"TESTING": True}).test_client()
    answers = [client.get("/api/v1/batches", headers=auth(api_key)) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert all("Retry-After" not in answer.headers for answer in answers[:3])
    assert int(answers[3].headers["Retry-After"]) > 0
    for path in ("/api/v1/batches", "/api/v1/checks/nope", "/api/openapi.json", "/docs", "/healthz", "/readyz"):
        response = client.get(path, headers=auth(api_key) if path.startswith("/api/v1/checks") else {})
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        if response.status_code not in (202, 429, 503):
            assert "Retry-After" not in response.headers, (path, response.status_code)


def test_readyz_not_ready_says_when_to_ask_again(settings: Settings) -> None:
    """No database yet (not migrated): 503 with Retry-After: 5, as every other outage answer."""
    client = create_app(settings.model_copy(update={"database_url": f"sqlite:///{settings.data_dir}/absent/x.db"}),
                        test_config={"TESTING": True}).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"


def test_a_huge_page_number_is_refused_not_a_500(client: FlaskClient, api_key: str) -> None:
    response = client.get("/api/v1/batches?page=466421945140837221400576", headers=auth(api_key))
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert client.get("/api/v1/batches?page=100000", headers=auth(api_key)).status_code == 200


def test_forged_tokens_share_their_address_allowance(database: Settings, api_key: str) -> None:
    client = create_app(database.model_copy(update={"rate_limit": "5 per minute"}),
                        test_config={"TESTING": True}).test_client()
    answers = [client.get("/api/v1/batches", headers=auth(f"fw_forged_token_number_{index:04d}")).status_code
               for index in range(12)]
    assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
    assert client.get("/api/v1/batches", headers=auth(api_key)).status_code == 200, "a verified key counts apart"


def test_readyz_gives_details_only_with_a_key(client: FlaskClient, api_key: str) -> None:
    assert client.get("/readyz").get_json() == {"status": "ready"}
    assert client.get("/readyz", headers=auth("fw_not_a_real_key_at_all_000")).get_json() == {"status": "ready"}
    detailed = client.get("/readyz", headers=auth(api_key)).get_json()
    assert detailed["status"] == "ready" and detailed["problems"] == {} and detailed["model_version"]
