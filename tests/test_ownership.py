"""Ownership over HTTP, on both backends: a submitter key reads and cancels only its own checks, batches, training
runs and the images of its own checks; another key's answer exactly as a missing one (``not_found``); viewers read
everything and change nothing (``forbidden``). Every endpoint that takes an id is tried with a second key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from backend.identity.keys import create_key
from backend.storage.db import session_scope
from backend.storage.schema import AuditEvent, Image, TrainingRun
from core.enums import Role, RunStatus
from testbed.images import LocalServer, distinct_photos, photo_bytes
from testbed.stack import Stack
from tests.actors import OPERATOR


@dataclass
class Keys:
    alice: str    # submitter: owns the work below
    bob: str      # submitter: a second client
    viewer: str


@dataclass
class Work:
    check_id: str
    sha256: str
    batch_id: str
    run_id: str


def _keys(stack: Stack) -> Keys:
    with session_scope(stack.settings) as session:
        made = {name: create_key(session, f"{name}-{stack.kind}", role, actor=OPERATOR)[1]
                for name, role in (("alice", Role.SUBMITTER), ("bob", Role.SUBMITTER), ("viewer", Role.VIEWER))}
    return Keys(**made)


def call(stack: Stack, key: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.api_url}/api/v1{path}", headers={"Authorization": f"Bearer {key}"},
                            timeout=60, **kwargs)


def _alices_work(stack: Stack, keys: Keys, image_server: LocalServer) -> Work:
    photo = distinct_photos(1, size=112)[0]
    checked = call(stack, keys.alice, "POST", "/checks", params={"wait": 10}, files={"image": ("a.jpg", photo)})
    assert checked.status_code in (200, 202), checked.text
    image_server.routes["/owned/slow.jpg"] = (200, {"Content-Type": "image/jpeg"}, photo_bytes("astronaut"))
    batch = call(stack, keys.alice, "POST", "/batches", json={"urls": [image_server.url("/owned/slow.jpg")],
                                                               "name": "alice's"})
    assert batch.status_code == 202, batch.text
    # A finished training run requested by an admin key (the training queue is not served by this stack).
    with session_scope(stack.settings) as session:
        run = TrainingRun(params={}, progress={}, status=RunStatus.DONE)
        session.add(run)
        session.flush()
        run_id = run.id
    return Work(check_id=checked.json()["id"], sha256=checked.json()["image"]["sha256"],
                batch_id=batch.json()["id"], run_id=run_id)


def assert_not_found(response: requests.Response, like: requests.Response) -> None:
    """``not_found``, worded exactly as the answer for an id that does not exist (``like``) but for the id."""
    assert response.status_code == like.status_code == 404, response.text
    body, missing = response.json()["error"], like.json()["error"]
    assert body["code"] == missing["code"] == "not_found"
    shown, asked = response.request.path_url.split("/")[4], like.request.path_url.split("/")[4]
    assert body["message"].replace(shown, "ID") == missing["message"].replace(asked, "ID")


def test_another_keys_work_is_not_found_on_every_endpoint_that_takes_an_id(stack: Stack,
                                                                            image_server: LocalServer) -> None:
    keys = _keys(stack)
    work = _alices_work(stack, keys, image_server)
    nobody = "0" * 32
    reads = {
        "check": (f"/checks/{work.check_id}", f"/checks/{nobody}"),
        "batch": (f"/batches/{work.batch_id}", f"/batches/{nobody}"),
        "results": (f"/batches/{work.batch_id}/results", f"/batches/{nobody}/results"),
        "image": (f"/images/{work.sha256}", f"/images/{'0' * 64}"),
        "matches": (f"/images/{work.sha256}/matches", f"/images/{'0' * 64}/matches"),
        "run": (f"/training-runs/{work.run_id}", f"/training-runs/{nobody}"),
    }
    for name, (path, missing) in reads.items():
        assert call(stack, keys.viewer, "GET", path).status_code == 200, name
        if name != "run":  # alice requested no run: the admin key's is not hers either
            assert call(stack, keys.alice, "GET", path).status_code == 200, name
        assert_not_found(call(stack, keys.bob, "GET", path), call(stack, keys.bob, "GET", missing))
    assert_not_found(call(stack, keys.alice, "GET", reads["run"][0]), call(stack, keys.alice, "GET", reads["run"][1]))

    # Lists hold only one's own.
    assert work.batch_id in [b["id"] for b in call(stack, keys.alice, "GET", "/batches").json()["batches"]]
    assert work.batch_id in [b["id"] for b in call(stack, keys.viewer, "GET", "/batches",
                                                   params={"per_page": 100}).json()["batches"]]
    assert call(stack, keys.bob, "GET", "/batches").json() == {"batches": [], "page": 1, "per_page": 20, "total": 0}
    assert work.run_id in [r["id"] for r in call(stack, keys.viewer, "GET", "/training-runs").json()["runs"]]
    assert call(stack, keys.bob, "GET", "/training-runs").json() == {"runs": []}

    # Cancels: another key's batch is not found (and stays as it was); a viewer may not; the owner may.
    events_before = _event_count(stack)
    assert_not_found(call(stack, keys.bob, "POST", f"/batches/{work.batch_id}/cancel"),
                     call(stack, keys.bob, "POST", f"/batches/{nobody}/cancel"))
    assert_not_found(call(stack, keys.bob, "POST", f"/training-runs/{work.run_id}/cancel"),
                     call(stack, keys.bob, "POST", f"/training-runs/{nobody}/cancel"))
    viewer_cancel = call(stack, keys.viewer, "POST", f"/batches/{work.batch_id}/cancel")
    assert viewer_cancel.status_code == 403 and viewer_cancel.json()["error"]["code"] == "forbidden"
    assert call(stack, keys.viewer, "POST", f"/training-runs/{work.run_id}/cancel").status_code == 403
    assert _event_count(stack) == events_before
    before = call(stack, keys.alice, "GET", f"/batches/{work.batch_id}").json()["status"]
    cancelled = call(stack, keys.alice, "POST", f"/batches/{work.batch_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelled", "done")
    assert _event_count(stack) == events_before + (1 if before in ("queued", "running") else 0)


def test_roles_gate_submitting_and_training(stack: Stack) -> None:
    keys = _keys(stack)
    photo = distinct_photos(1, size=104)[0]
    for path, kwargs in (("/checks", {"files": {"image": ("a.jpg", photo)}}),
                         ("/checks", {"json": {"url": "https://example.org/a.jpg"}}),
                         ("/batches", {"json": {"urls": ["https://example.org/a.jpg"]}})):
        refused = call(stack, keys.viewer, "POST", path, **kwargs)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", refused.text
    training = call(stack, keys.alice, "POST", "/training-runs", json={"epochs": 1})
    assert training.status_code == 403 and training.json()["error"]["code"] == "forbidden"
    assert "submitter role may not start or cancel training runs" in training.json()["error"]["message"]


def test_the_same_image_from_two_keys_is_stored_once_and_readable_by_both(stack: Stack) -> None:
    keys = _keys(stack)
    photo = distinct_photos(1, size=120)[0]
    first = call(stack, keys.alice, "POST", "/checks", params={"wait": 10}, files={"image": ("a.jpg", photo)}).json()
    sha256 = first["image"]["sha256"]
    assert call(stack, keys.bob, "GET", f"/images/{sha256}").status_code == 404
    second = call(stack, keys.bob, "POST", "/checks", params={"wait": 10}, files={"image": ("b.jpg", photo)}).json()
    assert second["image"]["sha256"] == sha256 and second["id"] != first["id"]
    for key in (keys.alice, keys.bob):
        image = call(stack, key, "GET", f"/images/{sha256}")
        assert image.status_code == 200 and image.content == photo
    # Each still reads only its own check of those bytes.
    assert call(stack, keys.bob, "GET", f"/checks/{first['id']}").status_code == 404
    assert call(stack, keys.alice, "GET", f"/checks/{second['id']}").status_code == 404
    with session_scope(stack.settings) as session:
        assert session.scalar(select(func.count()).select_from(Image).where(Image.sha256 == sha256)) == 1


def _event_count(stack: Stack) -> int:
    with session_scope(stack.settings) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


@pytest.fixture(autouse=True)
def _no_leftover_routes(image_server: LocalServer) -> Any:
    yield
    image_server.routes.pop("/owned/slow.jpg", None)
