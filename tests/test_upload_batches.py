"""Upload batches: many files in one multipart POST /api/v1/batches (backend/batches/uploads.py). Every file goes
through a single upload's intake, so refusals stay refusals (reported per file, never stored); the accepted files
become one batch's items in one transaction and one broker send, and reach a final state on a real worker. And the
embedded broker's cheaper publish, which every upload makes."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from apiflask import APIFlask
from flask.testing import FlaskClient
from kombu import Connection
from sqlalchemy import create_engine, select, text

from backend.api import create_app
from backend.checks import handoff
from backend.checks.broker import broker_connection_url
from backend.checks.service import claim_checks, commit_finished, record_score, submit_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check, Image, ModelVersion
from core.enums import CheckStatus, Source
from testbed.images import distinct_photos
from testbed.stack import Stack
from tests.test_batches import wait_for_batch
from tests.test_intake import png_declaring

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def form(files: Sequence[tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    return {"files": [(io.BytesIO(data), name) for name, data in files], **fields}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of each send to the scoring workers."""
    sends: list[list[str]] = []
    monkeypatch.setattr(handoff, "enqueue_scoring", lambda _settings, ids: sends.append(list(ids)))
    return sends


def test_files_become_one_batch_and_refused_files_are_reported_not_stored(
        client: FlaskClient, auth_headers: dict[str, str], database: Settings, active_model: ModelVersion,
        sent: list[list[str]]) -> None:
    photos = distinct_photos(3)
    files = [("a.jpg", photos[0]), ("b.jpg", photos[1]), ("doc.pdf", PDF), ("a-again.jpg", photos[0]),
             ("bomb.png", png_declaring(50_000, 50_000)), ("empty.jpg", b""), ("c.jpg", photos[2])]
    response = client.post("/api/v1/batches", data=form(files, name="folder"), headers=auth_headers)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["name"], body["total"], body["queued"], body["duplicates"]) == ("folder", 3, 3, 1)
    refused = {item["line"]: item for item in body["invalid"]}
    assert sorted(refused) == [3, 5, 6]
    assert refused[3]["value"] == "doc.pdf" and "PDF" in refused[3]["reason"]
    assert refused[5]["value"] == "bomb.png" and "MP" in refused[5]["reason"]
    assert refused[6]["value"] == "empty.jpg"
    # Each with the code a single upload of it gets, which `fakewatch check` prints for it.
    assert [refused[line]["code"] for line in (3, 5, 6)] == ["unsupported_format", "too_many_pixels", "invalid_image"]
    # One send for the whole batch, its items in the order of the files.
    with session_scope(database) as session:
        items = list(session.scalars(select(Check).where(Check.batch_id == body["id"]).order_by(Check.id)))
        assert sent == [[item.id for item in items]]
        assert [item.status for item in items] == [CheckStatus.QUEUED] * 3
        assert {item.source for item in items} == {Source.BATCH}
        images = [session.get(Image, item.image_id) for item in items]
        assert [image.byte_size for image in images if image] == [len(photos[0]), len(photos[1]), len(photos[2])]
        assert all(image and image.pdq_hex for image in images), "hashed at intake, as a single upload is"
        assert session.scalar(select(Image).where(Image.byte_size == len(PDF))) is None
    rows = client.get(f"/api/v1/batches/{body['id']}/results?format=jsonl", headers=auth_headers).get_data(as_text=True)
    assert [json.loads(line)["status"] for line in rows.splitlines()] == ["queued"] * 3


def test_a_batch_of_files_scored_before_is_done_at_once(client: FlaskClient, auth_headers: dict[str, str],
                                                        database: Settings, active_model: ModelVersion,
                                                        sent: list[list[str]]) -> None:
    old, new = distinct_photos(2)
    with session_scope(database) as session:
        first = submit_image(session, old, database).check
        session.commit()
        claim_checks(session, [first.id], stale_after_s=60)
        record_score(first, active_model, 0.9)
        commit_finished(session, [first])
    mixed = client.post("/api/v1/batches", data=form([("old.jpg", old), ("new.jpg", new)]), headers=auth_headers)
    assert mixed.status_code == 202
    assert (mixed.get_json()["done"], mixed.get_json()["queued"], mixed.get_json()["status"]) == (1, 1, "queued")
    assert len(sent) == 1 and len(sent[0]) == 1, "only the new file goes to the workers"
    cached = client.post("/api/v1/batches", data=form([("old.jpg", old)]), headers=auth_headers).get_json()
    assert (cached["status"], cached["done"], cached["total"]) == ("done", 1, 1)
    assert len(sent) == 1, "nothing to score: no send"


def test_requests_refused_as_a_whole(app: APIFlask, client: FlaskClient, auth_headers: dict[str, str],
                                     database: Settings, active_model: ModelVersion, sent: list[list[str]]) -> None:
    every_refused = client.post("/api/v1/batches", data=form([("a.pdf", PDF), ("b.pdf", PDF)]), headers=auth_headers)
    assert every_refused.status_code == 415
    error = every_refused.get_json()["error"]
    assert error["code"] == "unsupported_format" and "a.pdf" in error["message"] and "b.pdf" in error["message"]
    capped = create_app(database.model_copy(update={"batch_max_files": 2}), test_config={"TESTING": True})
    too_many = capped.test_client().post("/api/v1/batches", data=form(list(zip("abc", distinct_photos(3), strict=True))),
                                         headers=auth_headers)
    assert too_many.status_code == 413 and too_many.get_json()["error"]["code"] == "too_large"
    assert sent == []
    with session_scope(database) as session:
        assert session.scalar(select(Check.id)) is None, "a refused request leaves no check behind"
    # A multipart list of URLs (`file`) is still a URL batch.
    urls = client.post("/api/v1/batches", data={"file": (io.BytesIO(b"https://example.org/a.jpg\n"), "urls.txt")},
                       headers=auth_headers)
    assert urls.status_code == 202 and urls.get_json()["total"] == 1


def test_an_upload_batch_reaches_final_states_on_a_real_worker(embedded_stack: Stack) -> None:
    photos = distinct_photos(5, size=200)
    files = [(f"{index}.jpg", data) for index, data in enumerate(photos)] + [("bad.pdf", PDF), ("dup.jpg", photos[0])]
    response = requests.post(f"{embedded_stack.api_url}/api/v1/batches", headers=embedded_stack.headers(),
                             files=[("files", (name, data)) for name, data in files], timeout=60)
    assert response.status_code == 202, response.text
    assert response.json()["duplicates"] == 1
    batch = wait_for_batch(embedded_stack, response.json()["id"])
    assert (batch["status"], batch["total"], batch["done"]) == ("done", 5, 5)
    assert [item["line"] for item in batch["invalid"]] == [6]
    results = requests.get(f"{embedded_stack.api_url}/api/v1/batches/{batch['id']}/results",
                           params={"format": "jsonl"}, headers=embedded_stack.headers(), timeout=30)
    rows = [json.loads(line) for line in results.text.splitlines()]
    assert [row["status"] for row in rows] == ["done"] * 5
    assert all(row["verdict"] and row["score"] is not None for row in rows)


def test_the_embedded_broker_stores_a_message_per_publish_and_hands_it_back(database: Settings) -> None:
    """The embedded transport's own publish (one INSERT, the queue's id kept): messages land on their queue, in
    order, and a consumer gets them back."""
    url, transport = broker_connection_url(database.broker)
    broker = create_engine(url)
    with Connection(url, transport=transport) as connection:
        for queue, body in (("scoring", {"n": 1}), ("callbacks", {"n": 2}), ("scoring", {"n": 3})):
            with connection.SimpleQueue(queue) as simple:
                simple.put(body)
        with broker.connect() as rows:
            named = rows.execute(text("SELECT name, id FROM kombu_queue"))
            queues: dict[str, int] = {name: queue_id for name, queue_id in named}
            stored = rows.execute(text("SELECT queue_id FROM kombu_message ORDER BY id")).scalars().all()
        assert stored == [queues["scoring"], queues["callbacks"], queues["scoring"]]
        with connection.SimpleQueue("scoring") as scoring:
            got = [scoring.get(timeout=1) for _ in range(2)]
            assert [message.payload for message in got] == [{"n": 1}, {"n": 3}]
            for message in got:
                message.ack()
        with connection.SimpleQueue("callbacks") as callbacks:
            last = callbacks.get(timeout=1)
            assert last.payload == {"n": 2}
            last.ack()
    broker.dispose()
