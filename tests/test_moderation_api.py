"""Reviews, the review queue, model versions and image deletion over HTTP, and retention: the API calls the console's
service functions, on a real database (both dialects where the SQL differs) and a real image store."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from backend.api import create_app
from backend.checks.service import submit_image
from backend.delivery.retention import apply_retention
from backend.identity.access import Actor
from backend.identity.audit import EventFilters, find_events
from backend.identity.keys import create_key
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import AuditEvent, Check, Image, ModelVersion, Review
from backend.storage.store import image_path
from backend.training.data import reviewed_images
from backend.training.versions import register_model
from core.enums import AuditAction, CheckStatus, Role, Source, Verdict
from core.model_metadata import SHIPPED_MODEL, metadata_path
from fakewatch import client_commands
from testbed.images import distinct_photos
from testbed.models import copy_exported_files
from worker.sweeper import start_sweeper


def _version_copy(tmp_path: Path, name: str) -> Path:
    """The shipped model's file under another version name (same bytes, so its SHA-256 still matches)."""
    folder = tmp_path / name
    folder.mkdir()
    model = folder / "model.keras"
    shutil.copyfile(SHIPPED_MODEL, model)
    copy_exported_files(SHIPPED_MODEL, folder)
    meta = json.loads(metadata_path(SHIPPED_MODEL).read_text())
    meta["name"] = name
    metadata_path(model).write_text(json.dumps(meta))
    return model


@pytest.fixture
def shipped(any_database: Settings) -> ModelVersion:
    with session_scope(any_database) as session:
        return register_model(session, SHIPPED_MODEL, activate=True)


@pytest.fixture
def api(any_database: Settings, shipped: ModelVersion) -> tuple[FlaskClient, dict[str, str], Settings]:
    app: APIFlask = create_app(any_database, test_config={"TESTING": True})
    with session_scope(any_database) as session:
        _, key = create_key(session, "moderation-tests", Role.ADMIN, actor=Actor.system("tests"))
    return app.test_client(), {"Authorization": f"Bearer {key}"}, any_database


def _flagged_checks(settings: Settings, scores: list[float], source: Source = Source.UPLOAD) -> list[tuple[str, str]]:
    """Done, flagged checks of distinct images with these scores (as a worker would leave them): (check id, sha)."""
    made = []
    with session_scope(settings) as session:
        for data, score in zip(distinct_photos(len(scores), size=64), scores, strict=True):
            check = submit_image(session, data, settings, source=source).check
            check.status, check.score, check.flagged = CheckStatus.DONE, score, True
            check.verdict = Verdict.FAKE if score >= 0.6 else Verdict.UNCERTAIN
            session.flush()
            assert check.image is not None
            made.append((check.id, check.image.sha256))
    return made


def test_reviews_label_an_image_and_empty_the_queue(api: tuple[FlaskClient, dict[str, str], Settings]) -> None:
    client, headers, settings = api
    (first_id, first), (_, second), (_, third) = _flagged_checks(settings, [0.9, 0.55, 0.7])
    queue = client.get("/api/v1/queue?per_page=2", headers=headers).get_json()
    assert queue["total"] == 3 and [item["sha256"] for item in queue["items"]] == [first, second]
    page_two = client.get("/api/v1/queue?per_page=2&page=2", headers=headers).get_json()
    assert [item["sha256"] for item in page_two["items"]] == [third]
    by_score = client.get("/api/v1/queue?order=highest_score&verdict=fake", headers=headers).get_json()
    assert [item["sha256"] for item in by_score["items"]] == [first, third] and by_score["total"] == 2
    narrowed = client.get("/api/v1/queue?min_score=0.6&max_score=0.8", headers=headers).get_json()
    assert [item["sha256"] for item in narrowed["items"]] == [third]

    labelled = client.post(f"/api/v1/images/{first}/reviews", headers=headers,
                           json={"label": "fake", "reason": "face swap", "note": "seen before", "check_id": first_id})
    assert labelled.status_code == 201, labelled.get_data(as_text=True)
    review = labelled.get_json()["reviews"][0]
    assert (review["label"], review["reason"], review["note"], review["check_id"]) == (
        "fake", "face swap", "seen before", first_id)
    assert review["by"] == "API key moderation-tests"
    assert client.get(f"/api/v1/checks/{first_id}", headers=headers).get_json()["review"]["label"] == "fake"
    assert client.get("/api/v1/queue", headers=headers).get_json()["total"] == 2, "a labelled image leaves the queue"
    again = client.post(f"/api/v1/images/{first}/reviews", headers=headers, json={"label": "real"})
    history = client.get(f"/api/v1/images/{first}/reviews", headers=headers).get_json()
    assert again.status_code == 201 and [r["label"] for r in history["reviews"]] == ["real", "fake"]


@pytest.mark.parametrize(("body", "status"), [
    ({"label": "maybe"}, 422), ({}, 422), ({"label": "fake", "note": "x" * 2001}, 422),
    ({"label": "fake", "reason": 5}, 422), ({"label": "fake", "check_id": "nope"}, 404),
])
def test_review_refusals(api: tuple[FlaskClient, dict[str, str], Settings], body: dict[str, Any], status: int) -> None:
    client, headers, settings = api
    [(_, sha)] = _flagged_checks(settings, [0.8])
    response = client.post(f"/api/v1/images/{sha}/reviews", headers=headers, json=body)
    assert response.status_code == status and response.get_json()["error"]["code"] in ("invalid_request", "not_found")
    assert client.post(f"/api/v1/images/{'0' * 64}/reviews", headers=headers, json={"label": "real"}).status_code == 404
    assert client.post("/api/v1/images/xyz/reviews", headers=headers, json={"label": "real"}).status_code == 422
    assert client.get("/api/v1/queue?order=random", headers=headers).status_code == 422
    assert client.get("/api/v1/queue?min_score=0.9&max_score=0.1", headers=headers).status_code == 422
    assert client.post(f"/api/v1/images/{sha}/reviews", json={"label": "real"}).status_code == 401


def test_model_versions_promote_and_roll_back(api: tuple[FlaskClient, dict[str, str], Settings],
                                             shipped: ModelVersion, tmp_path: Path) -> None:
    client, headers, settings = api
    with session_scope(settings) as session:
        candidate = register_model(session, _version_copy(tmp_path, "candidate-1"))
        candidate_id = candidate.id
    listed = client.get("/api/v1/model-versions", headers=headers).get_json()["versions"]
    assert {v["name"]: v["active"] for v in listed} == {shipped.name: True, "candidate-1": False}
    # The candidate was never compared with the active version: the promotion guard refuses, and nothing changes.
    guarded = client.post(f"/api/v1/model-versions/{candidate_id}/promote", headers=headers)
    assert guarded.status_code == 409 and guarded.get_json()["error"]["code"] == "promotion_refused"
    short = client.post(f"/api/v1/model-versions/{candidate_id}/promote", headers=headers, json={"reason": "why"})
    assert short.status_code == 422 and short.get_json()["error"]["code"] == "invalid_request"
    override = "incident 7: the active model misses a new generator"
    promoted = client.post(f"/api/v1/model-versions/{candidate_id}/promote", headers=headers,
                           json={"reason": override})
    with session_scope(settings) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == AuditAction.PROMOTE)).one()
        assert (event.after or {})["override_reason"] == override and event.object_id == str(candidate_id)
    assert promoted.status_code == 200 and promoted.get_json()["active"] and promoted.get_json()["name"] == "candidate-1"
    rolled = client.post("/api/v1/model-versions/rollback", headers=headers)
    assert rolled.status_code == 200 and rolled.get_json()["name"] == shipped.name
    with session_scope(settings) as session:
        active = session.scalars(select(ModelVersion.name).where(ModelVersion.active.is_(True))).all()
    assert active == [shipped.name], "exactly one version is active"
    assert client.post("/api/v1/model-versions/999/promote", headers=headers).status_code == 404
    # Promotion keeps the service's rule: a version whose file is gone is refused, and nothing changes.
    with session_scope(settings) as session:
        gone = register_model(session, _version_copy(tmp_path, "gone"))
        Path(gone.file).unlink()
        gone_id = gone.id
    refused = client.post(f"/api/v1/model-versions/{gone_id}/promote", headers=headers, json={"reason": override})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "invalid_model"


def test_deleting_an_image_removes_its_bytes_and_blanks_its_checks(
        api: tuple[FlaskClient, dict[str, str], Settings]) -> None:
    client, headers, settings = api
    [(check_id, sha), (_, other)] = _flagged_checks(settings, [0.9, 0.8])
    pdq = "ab" * 32
    with session_scope(settings) as session:
        for row in session.scalars(select(Image)):
            # As intake records them; the other image's hash is far from this one's, so labelling this one does
            # not resolve it as a near-copy.
            row.pdq_hex, row.pdq_quality = (pdq if row.sha256 == sha else "54" * 32), 100
        image = session.scalars(select(Image).where(Image.sha256 == sha)).one()
        stored = image_path(image.storage_key, settings.images_dir)
        data = stored.read_bytes()
    client.post(f"/api/v1/images/{sha}/reviews", headers=headers, json={"label": "fake"})
    assert client.get(f"/api/v1/images/{sha}", headers=headers).status_code == 200

    deleted = client.delete(f"/api/v1/images/{sha}", headers=headers)
    assert deleted.status_code == 200, deleted.get_data(as_text=True)
    assert deleted.get_json() == {"sha256": sha, "checks": 1, "purged": False, "file_removed": True}
    assert not stored.exists(), "the bytes are gone from disk"
    assert client.get(f"/api/v1/images/{sha}", headers=headers).status_code == 404
    check = client.get(f"/api/v1/checks/{check_id}", headers=headers).get_json()
    assert check["image"] is None and check["image_deleted_at"] is not None
    assert check["verdict"] == "fake" and check["review"]["label"] == "fake", "the verdict and the label stay"
    assert client.delete(f"/api/v1/images/{sha}", headers=headers).status_code == 404, "deleted once"
    assert client.get(f"/api/v1/images/{sha}/reviews", headers=headers).status_code == 404
    with session_scope(settings) as session:
        row = session.scalars(select(Image).where(Image.sha256 == sha)).one()
        assert row.deleted_at is not None and row.pdq_hex == pdq, "the PDQ hash stays for near-duplicate matching"
        assert [image.sha256 for image, _ in reviewed_images(session)] == [], "never used for training"
        assert session.scalar(select(Review.id).where(Review.image_id == row.id)) is not None
    assert client.get("/api/v1/queue", headers=headers).get_json()["total"] == 1

    purged = client.delete(f"/api/v1/images/{other}?purge=true", headers=headers)
    assert purged.status_code == 200 and purged.get_json()["purged"]
    with session_scope(settings) as session:
        row = session.scalars(select(Image).where(Image.sha256 == other)).one()
        assert row.pdq_hex is None and row.provenance is None
        assert session.scalar(select(Review.id).where(Review.image_id == row.id)) is None
    # The same bytes sent again are a new submission: stored again; the old check stays marked deleted.
    resent = client.post("/api/v1/checks", headers=headers, data={"image": (io.BytesIO(data), "again.jpg")})
    assert resent.status_code in (200, 202) and resent.get_json()["image"]["sha256"] == sha
    assert stored.exists() and client.get(f"/api/v1/images/{sha}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/checks/{check_id}", headers=headers).get_json()["image"] is None


def test_retention_deletes_old_unreviewed_images_only(any_database: Settings, shipped: ModelVersion) -> None:
    settings = any_database.model_copy(update={"retention_days": 30.0})
    made = _flagged_checks(settings, [0.9, 0.9, 0.9])
    (_, old_unreviewed), (_, old_reviewed), (_, recent) = made
    with session_scope(settings) as session:
        for sha in (old_unreviewed, old_reviewed):
            image = session.scalars(select(Image).where(Image.sha256 == sha)).one()
            image.first_seen = image.first_seen - timedelta(days=31)
        reviewed = session.scalars(select(Image).where(Image.sha256 == old_reviewed)).one()
        session.add(Review(image_id=reviewed.id, label="fake", reviewer="mod"))
    with session_scope(settings) as session:
        assert apply_retention(session, settings) == 1
        assert apply_retention(session, settings) == 0, "a second pass finds nothing more"
        state = {image.sha256: image.deleted_at is not None for image in session.scalars(select(Image))}
        assert state == {old_unreviewed: True, old_reviewed: False, recent: False}
        check = session.scalars(select(Check).join(Image).where(Image.sha256 == old_unreviewed)).one()
        assert check.image_deleted_at is not None
    with session_scope(any_database) as session:
        assert apply_retention(session, any_database) == 0, "no retention setting keeps everything"


def test_review_models_and_images_commands_go_through_the_api(
        api: tuple[FlaskClient, dict[str, str], Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commands are API clients: here their requests are served by the test app instead of a network."""
    client, headers, settings = api
    [(_, sha)] = _flagged_checks(settings, [0.9])
    with session_scope(settings) as session:
        candidate_id = register_model(session, _version_copy(tmp_path, "candidate-cli")).id

    class FlaskSession:
        """requests.Session's request(), answered by the Flask test client."""

        def __init__(self) -> None:
            self.headers: dict[str, str] = {}

        def mount(self, *_args: object) -> None:
            pass

        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            path = url.removeprefix("http://api.test")
            kwargs.pop("timeout", None)
            response = client.open(path, method=method, headers=self.headers, query_string=kwargs.pop("params", None),
                                   json=kwargs.pop("json", None))
            return _Response(response.status_code, response.get_data())

    monkeypatch.setattr(client_commands.ApiClient, "__init__", _client_init(FlaskSession))
    runner = CliRunner()
    cli_settings = settings.model_copy(update={"api_url": "http://api.test", "api_key": headers["Authorization"][7:]})
    labelled = runner.invoke(client_commands.review, [sha, "--label", "real", "--reason", "known photo"],
                             obj=cli_settings)
    assert labelled.exit_code == 0 and "labelled real" in labelled.output, labelled.output
    listed = runner.invoke(client_commands.models, ["list"], obj=cli_settings)
    assert listed.exit_code == 0 and "candidate-cli" in listed.output and "\tactive\t" in listed.output
    guarded = runner.invoke(client_commands.models, ["promote", str(candidate_id)], obj=cli_settings)
    assert guarded.exit_code != 0 and "promotion_refused" in guarded.output  # never compared: the guard refuses
    promoted = runner.invoke(client_commands.models, ["promote", str(candidate_id), "--reason",
                                                      "tests: no comparison to guard on"], obj=cli_settings)
    assert promoted.exit_code == 0 and "candidate-cli is active." in promoted.output, promoted.output
    rolled = runner.invoke(client_commands.models, ["rollback"], obj=cli_settings)
    assert rolled.exit_code == 0 and "is active again" in rolled.output
    deleted = runner.invoke(client_commands.images, ["delete", sha, "0" * 64], obj=cli_settings)
    assert deleted.exit_code == 1, "one of the two was not found"
    assert f"{sha}: deleted (1 checks kept)" in deleted.stdout and "not_found" in deleted.stderr


class _Response:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def json(self) -> Any:
        return json.loads(self.content)


def _client_init(session_class: type) -> Any:
    def init(self: Any, base_url: str, api_key: str, timeout_s: float = 60) -> None:
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s
        # Both of the client's sessions (retrying, and send-once for POSTs without an Idempotency-Key).
        self.session, self.once = session_class(), session_class()
        for session in (self.session, self.once):
            session.headers["Authorization"] = f"Bearer {api_key}"

    return init


def test_the_sweeper_applies_retention_as_periodic_work(database: Settings) -> None:
    with session_scope(database) as session:
        register_model(session, SHIPPED_MODEL, activate=True)
    settings = database.model_copy(update={"retention_days": 1.0, "sweep_interval_s": 0.1})
    [(_, sha)] = _flagged_checks(settings, [0.9])
    with session_scope(settings) as session:
        image = session.scalars(select(Image).where(Image.sha256 == sha)).one()
        image.first_seen = image.first_seen - timedelta(days=2)
        stored = image_path(image.storage_key, settings.images_dir)
    stop = threading.Event()
    thread = start_sweeper(stop, settings)
    try:
        deadline = time.monotonic() + 20
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not stored.exists(), "the sweeper deleted the expired image"
    with session_scope(settings) as session:
        assert session.scalars(select(Image).where(Image.sha256 == sha)).one().deleted_at is not None


def test_roles_gate_moderation_over_http_and_each_action_is_audited_once(
    api: tuple[FlaskClient, dict[str, str], Settings],
) -> None:
    client, admin, settings = api
    with session_scope(settings) as session:
        keys = {role: create_key(session, f"{role}-key", role, actor=Actor.system("tests"))[1] for role in
                (Role.SUBMITTER, Role.VIEWER, Role.MODERATOR)}
    as_role = {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
    (_, sha), (_, other) = _flagged_checks(settings, [0.9, 0.8])

    refused = client.post(f"/api/v1/images/{sha}/reviews", headers=as_role[Role.VIEWER], json={"label": "fake"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert client.get("/api/v1/queue", headers=as_role[Role.SUBMITTER]).status_code == 403
    assert client.get("/api/v1/model-versions", headers=as_role[Role.SUBMITTER]).status_code == 403
    assert client.get("/api/v1/queue", headers=as_role[Role.VIEWER]).get_json()["total"] == 2
    assert client.post("/api/v1/model-versions/rollback", headers=as_role[Role.MODERATOR]).status_code == 403
    assert client.delete(f"/api/v1/images/{other}", headers=as_role[Role.MODERATOR]).status_code == 403

    labelled = client.post(f"/api/v1/images/{sha}/reviews", headers=as_role[Role.MODERATOR], json={"label": "fake"})
    assert labelled.status_code == 201 and labelled.get_json()["reviews"][0]["by"] == f"API key {Role.MODERATOR}-key"
    assert client.delete(f"/api/v1/images/{other}", headers=admin).status_code == 200
    with session_scope(settings) as session:
        events = find_events(session, EventFilters(actions=[AuditAction.LABEL, AuditAction.DELETE]))
        assert sorted((event.action, event.actor_name) for event in events) == [
            (AuditAction.DELETE, "moderation-tests"), (AuditAction.LABEL, f"{Role.MODERATOR}-key")]
