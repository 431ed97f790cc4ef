"""Callbacks: signed POSTs of a final check or a finished batch, retried with backoff, recorded per delivery, under
the fetcher's address guard, delivered by a worker of their own so a slow receiver never holds up scoring."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from backend.delivery.callbacks import signature, verify_signature
from backend.identity.keys import hash_key
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ApiKey
from fakewatch.cli import cli
from testbed.images import LocalServer, photo_bytes
from testbed.stack import Stack, local_allowlist


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1: answers each POST with the next status of ``statuses`` (then 200), after
    ``delay_s``; records what it got."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append(Received(dict(self.headers), body, time.monotonic()))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    server = state.serve()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks/fakewatch"
    server.shutdown()
    server.server_close()


def _own_hmac(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check, written out from docs/api.md ("Callbacks") rather than with fakewatch's helper."""
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def _secret(stack: Stack) -> str:
    with stack.session() as session:
        secret = session.scalar(select(ApiKey.secret).where(ApiKey.key_hash == hash_key(stack.api_key)))
    assert secret and secret.startswith("whsec_")
    return secret


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- signatures ------------------------------------------------------------------------------------------------------


def test_signature_is_an_hmac_of_timestamp_and_raw_body() -> None:
    body = b'{"id":"abc","status":"done"}'
    header = signature("whsec_k", body, 1_700_000_000)
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature("whsec_k", header, body, now=1_700_000_100)
    assert not verify_signature("whsec_k", header, body + b" ", now=1_700_000_100), "a changed body fails"
    assert not verify_signature("whsec_other", header, body, now=1_700_000_100), "another secret fails"
    assert not verify_signature("whsec_k", header, body, now=1_700_000_000 + 301), "a stale timestamp fails"
    assert not verify_signature("whsec_k", "v1=" + expected, body), "no timestamp fails"


# --- submission ------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("active_model")
def test_callback_urls_pass_the_address_guard(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    def post(callback_url: str) -> Any:
        return client.post("/api/v1/checks", headers=auth_headers,
                           data={"image": (io.BytesIO(photo_bytes()), "x.jpg"), "callback_url": callback_url})

    for url, status, code in [("ftp://example.org/hook", 422, "invalid_url"),
                              ("http://10.1.2.3/hook", 403, "blocked_address"),
                              ("http://127.0.0.1:5432/hook", 403, "blocked_address"),
                              ("http://169.254.169.254/latest", 403, "blocked_address")]:
        response = post(url)
        assert (response.status_code, response.get_json()["error"]["code"]) == (status, code), url
    batch = client.post("/api/v1/batches", headers=auth_headers,
                        json={"urls": ["https://example.org/a.jpg"], "callback_url": "http://[::1]:8080/x"})
    assert batch.status_code == 403 and batch.get_json()["error"]["code"] == "blocked_address"
    accepted = post("https://hooks.example.org/fakewatch")
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    assert accepted.get_json()["callback"] == {
        "url": "https://hooks.example.org/fakewatch", "status": "pending", "attempts": 0, "last_status_code": None,
        "last_error": None, "next_attempt_at": None, "last_attempt_at": None, "delivered_at": None}


def test_keys_get_a_secret_a_default_callback_and_a_rotated_secret(database: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "pipeline", "--callback-url", "https://hooks.example.org/a"],
                            obj=database)
    assert created.exit_code == 0, created.output
    lines = created.stdout.strip().splitlines()
    assert lines[-2].startswith("Callback secret: whsec_") and lines[-1].startswith("fw_")
    secret = lines[-2].removeprefix("Callback secret: ")
    with session_scope(database) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(lines[-1])))
        assert row is not None and row.secret == secret and row.callback_url == "https://hooks.example.org/a"
    rotated = runner.invoke(cli, ["keys", "rotate-secret", "pipeline"], obj=database)
    assert rotated.exit_code == 0, rotated.output
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret
    refused = runner.invoke(cli, ["keys", "set-callback", "pipeline", "http://192.168.1.5/hook"], obj=database)
    assert refused.exit_code != 0 and "private" in refused.stderr
    cleared = runner.invoke(cli, ["keys", "set-callback", "pipeline"], obj=database)
    assert cleared.exit_code == 0
    with session_scope(database) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == "pipeline"))
        assert row is not None and row.secret == new_secret and row.callback_url is None


# --- delivery, on both backends ----------------------------------------------------------------------------------------


def test_a_failing_receiver_sees_signed_retries_until_it_accepts(stack: Stack,
                                                                 receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.statuses = [500, 500]
    secret = _secret(stack)
    response = stack.post_image(photo_bytes("coffee", size=80), callback_url=url)
    assert response.status_code in (200, 202), response.text
    check_id = response.json()["id"]
    _wait_for(lambda: len(state.received) >= 3 and stack.get_check(check_id)["callback"]["status"] == "delivered",
              60, "three deliveries, the last accepted")
    assert len(state.received) == 3, "no delivery after the receiver accepted"
    for delivery in state.received:
        assert _own_hmac(secret, delivery.headers["X-Fakewatch-Signature"], delivery.body)
        assert delivery.headers["X-Fakewatch-Event"] == "check.finished"
        body = json.loads(delivery.body)
        assert body["id"] == check_id and body["status"] == "done" and body["verdict"] is not None
    gaps = [later.at - earlier.at for earlier, later in zip(state.received, state.received[1:], strict=False)]
    assert all(gap >= 0.45 for gap in gaps), f"retries wait the configured backoff: {gaps}"
    record = stack.get_check(check_id)["callback"]
    assert (record["url"], record["attempts"], record["last_status_code"]) == (url, 3, 200)
    assert record["last_error"] is None and record["delivered_at"] is not None


def test_a_finished_batch_is_posted_once(stack: Stack, receiver: tuple[Receiver, str],
                                        image_server: LocalServer) -> None:
    state, url = receiver
    image_server.routes["/cb/photo.jpg"] = (200, {"Content-Type": "image/jpeg"}, photo_bytes("rocket", size=72))
    secret = _secret(stack)
    created = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), timeout=30, json={
        "urls": [image_server.url("/cb/photo.jpg"), image_server.url("/cb/missing.jpg")], "callback_url": url})
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    _wait_for(lambda: len(state.received) >= 1, 60, "the batch's callback")
    time.sleep(1.5)  # a second delivery, if one were wrongly owed, would have come by now
    assert len(state.received) == 1, "one callback for the batch, none per item"
    delivery = state.received[0]
    assert _own_hmac(secret, delivery.headers["X-Fakewatch-Signature"], delivery.body)
    body = json.loads(delivery.body)
    assert (body["id"], body["status"], body["done"], body["failed"]) == (batch_id, "done", 1, 1)
    batch = requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}", headers=stack.headers(), timeout=30).json()
    assert batch["callback"]["status"] == "delivered" and batch["callback"]["attempts"] == 1


def test_a_slow_receiver_never_holds_up_scoring(embedded_stack: Stack, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.delay_s = 6.0
    first = embedded_stack.post_image(photo_bytes("camera", size=88), callback_url=url)
    _wait_for(lambda: len(state.received) >= 1, 30, "the slow receiver to be called")
    started = time.monotonic()
    # While the receiver sits on the first callback, other checks are scored as fast as ever.
    for index in range(3):
        later = embedded_stack.post_image(photo_bytes("coins", size=60 + index), wait=10)
        assert later.json()["status"] == "done", later.text
    assert time.monotonic() - started < 6.0, "scoring waited for the callback"
    assert first.json()["id"]


def test_a_receiver_that_never_accepts_ends_failed_with_the_last_error(stack: Stack,
                                                                       receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.statuses = [503] * 10
    check_id = stack.post_image(photo_bytes("hubble_deep_field", size=70), callback_url=url).json()["id"]
    _wait_for(lambda: stack.get_check(check_id)["callback"]["status"] == "failed", 60, "the delivery to give up")
    record = stack.get_check(check_id)["callback"]
    # One attempt and one per configured retry delay (three in the test stack).
    assert record["attempts"] == 4 and len(state.received) == 4
    assert record["last_status_code"] == 503 and "503" in record["last_error"]


def test_callbacks_to_an_address_the_allowlist_does_not_open_are_refused(stack: Stack) -> None:
    """The test stack allow-lists 127.0.0.1's ephemeral ports: PostgreSQL's and Redis's ports stay closed."""
    assert local_allowlist() in stack.env["FAKEWATCH_FETCH_ALLOWLIST"]
    for port in (5432, 6379):
        response = stack.post_image(photo_bytes(), callback_url=f"http://127.0.0.1:{port}/")
        assert response.status_code == 403 and response.json()["error"]["code"] == "blocked_address"
