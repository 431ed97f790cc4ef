"""The error table of docs/api.md is what the API does: each row's case, played against the real Flask app (the
app factory on a fresh embedded database, no worker), answers that row's status and code. A row without a case
here fails, and so does a case whose row is gone, so the table and the API cannot drift apart.

Rows that cannot be produced in-process are named in NOT_IN_PROCESS with the reason."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from PIL import Image, PngImagePlugin
from werkzeug.test import TestResponse

from backend.api import create_app
from backend.identity.keys import create_key
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from backend.training.versions import ensure_shipped_model, register_model
from core.enums import Role
from core.model_metadata import SHIPPED_MODEL, metadata_path
from testbed.images import photo_bytes
from testbed.stack import free_port, isolated_settings
from tests.actors import OPERATOR
from tests.fixtures_models import write_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|\s*(.+?)\s*\|\s*$")


def error_table() -> list[tuple[int, str, str]]:
    """(status, code, case) for each row of the table under docs/api.md's "## Errors"."""
    text = API_DOC.read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    return [(int(m[1]), m[2], m[3]) for line in section.splitlines() if (m := ROW.match(line))]


@dataclass
class World:
    """A migrated database with the shipped model active, an admin and a submitter key, and a place for more."""

    settings: Settings
    admin: str
    submitter: str
    tmp: Path

    def app(self, **overrides: Any) -> APIFlask:
        return create_app(self.settings.model_copy(update=overrides), test_config={"TESTING": True})

    def client(self, **overrides: Any) -> FlaskClient:
        return self.app(**overrides).test_client()

    def fresh(self, name: str, *, active_model: bool = True, **overrides: Any) -> World:
        """Another world on a database of its own, for cases that need a state of their own."""
        return make_world(self.tmp / name, active_model=active_model, **overrides)


def make_world(tmp: Path, *, active_model: bool = True, **overrides: Any) -> World:
    settings = isolated_settings(data_dir=tmp / "var", **overrides)
    upgrade_database(settings.database)
    with session_scope(settings) as session:
        if active_model:
            ensure_shipped_model(session)
        _, admin = create_key(session, "admin", Role.ADMIN, actor=OPERATOR)
        _, submitter = create_key(session, "submitter", Role.SUBMITTER, actor=OPERATOR)
    return World(settings, admin, submitter, tmp)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = make_world(tmp_path_factory.mktemp("error-table"))
    yield made
    get_engine(made.settings.database).dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: FlaskClient, key: str, data: bytes, headers: dict[str, str] | None = None) -> TestResponse:
    return client.post("/api/v1/checks", headers={**bearer(key), **(headers or {})},
                       data={"image": (io.BytesIO(data), "upload.bin")})


def png_text_bomb() -> bytes:
    """A small PNG carrying a zTXt chunk that inflates to 2 MiB."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (2 * 1024 * 1024), zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def training_world(world: World, name: str, **overrides: Any) -> World:
    """A world whose training runs have a (tiny) base dataset to train on."""
    dataset = write_tiny_dataset(world.tmp / f"{name}-data")
    return world.fresh(name, training_datasets=(str(dataset),), **overrides)


# --- one function per row: it plays the case and returns the API's answer ------------------------------------


def broken_json(world: World) -> TestResponse:
    return world.client().post("/api/v1/checks", headers=bearer(world.admin), data="{not json",
                               content_type="application/json")


def text_chunk_bomb(world: World) -> TestResponse:
    return upload(world.client(), world.admin, png_text_bomb())


def no_key(world: World) -> TestResponse:
    return world.client().get("/api/v1/checks/abc")


def unknown_key(world: World) -> TestResponse:
    return world.client().get("/api/v1/checks/abc", headers=bearer("fw_" + "x" * 40))


def submitter_labels(world: World) -> TestResponse:
    return world.client().post(f"/api/v1/images/{'a' * 64}/reviews", headers=bearer(world.submitter),
                               json={"label": "fake"})


def blocked_url(world: World) -> TestResponse:
    # Loopback, which no allow-list entry names here; nothing connects at submission.
    return world.client().post("/api/v1/checks", headers=bearer(world.admin), json={"url": "http://127.0.0.1/a.jpg"})


def missing_id(world: World) -> TestResponse:
    return world.client().get("/api/v1/checks/no-such-check", headers=bearer(world.admin))


def another_keys_check(world: World) -> TestResponse:
    client = world.client()
    created = upload(client, world.admin, photo_bytes("coffee", size=96))
    assert created.status_code in (200, 202), created.get_data(as_text=True)
    return client.get(f"/api/v1/checks/{created.get_json()['id']}", headers=bearer(world.submitter))


def wrong_method(world: World) -> TestResponse:
    return world.client().delete("/api/v1/checks", headers=bearer(world.admin))


def reused_idempotency_key(world: World) -> TestResponse:
    client, key = world.client(), {"Idempotency-Key": "error-table-1"}
    first = upload(client, world.admin, photo_bytes("chelsea", size=96), key)
    assert first.status_code in (200, 202), first.get_data(as_text=True)
    return upload(client, world.admin, photo_bytes("rocket", size=96), key)


def candidate_version(world: World, name: str) -> tuple[int, Path]:
    """A second version (a copy of the shipped model under another name), registered and not active."""
    folder = world.tmp / name
    folder.mkdir(exist_ok=True)
    model = folder / f"{name}.keras"
    shutil.copyfile(SHIPPED_MODEL, model)
    # Without the shipped model's exported file: this copy is the .keras alone, scored through Keras if ever used.
    metadata = {key: value for key, value in json.loads(metadata_path(SHIPPED_MODEL).read_text()).items()
                if key not in {"files", "runtime"}}
    metadata_path(model).write_text(json.dumps({**metadata, "name": name}))
    with session_scope(world.settings) as session:
        return register_model(session, model).id, model


def refused_promotion(world: World) -> TestResponse:
    # Never compared with the active version on held-out reviews: the guard refuses it.
    version_id, _ = candidate_version(world, "refused-candidate")
    return world.client().post(f"/api/v1/model-versions/{version_id}/promote", headers=bearer(world.admin), json={})


def promotion_of_a_missing_file(world: World) -> TestResponse:
    version_id, model = candidate_version(world, "missing-candidate")
    model.unlink()
    return world.client().post(f"/api/v1/model-versions/{version_id}/promote", headers=bearer(world.admin),
                               json={"reason": "past the guard, on purpose"})


def nothing_to_roll_back(world: World) -> TestResponse:
    return world.client().post("/api/v1/model-versions/rollback", headers=bearer(world.admin))


def training_busy(world: World) -> TestResponse:
    busy = training_world(world, "busy")
    client = busy.client()
    first = client.post("/api/v1/training-runs", headers=bearer(busy.admin), json={"epochs": 1})
    assert first.status_code == 202, first.get_data(as_text=True)
    return client.post("/api/v1/training-runs", headers=bearer(busy.admin), json={"epochs": 1})


def no_training_data(world: World) -> TestResponse:
    # "none": reviewed images only, and nobody reviewed anything.
    return world.client(training_datasets=("none",)).post("/api/v1/training-runs", headers=bearer(world.admin),
                                                          json={})


def fine_tune_without_model(world: World) -> TestResponse:
    bare = world.fresh("fine-tune", active_model=False)
    return bare.client().post("/api/v1/training-runs", headers=bearer(bare.admin), json={"from_scratch": False})


def broker_down_training(world: World) -> TestResponse:
    trainable = training_world(world, "broker-down")
    return trainable.client(broker_url=f"redis://127.0.0.1:{free_port()}/0").post(
        "/api/v1/training-runs", headers=bearer(trainable.admin), json={"epochs": 1})


def cancel_ended_run(world: World) -> TestResponse:
    trainable = training_world(world, "ended")
    refused = trainable.client(broker_url=f"redis://127.0.0.1:{free_port()}/0").post(
        "/api/v1/training-runs", headers=bearer(trainable.admin), json={"epochs": 1})
    assert refused.status_code == 503, "the broker refused the run, which ended failed"
    client = trainable.client()
    [run] = client.get("/api/v1/training-runs", headers=bearer(trainable.admin)).get_json()["runs"]
    assert run["status"] == "failed"
    return client.post(f"/api/v1/training-runs/{run['id']}/cancel", headers=bearer(trainable.admin))


def image_over_byte_cap(world: World) -> TestResponse:
    data = photo_bytes("astronaut")
    return upload(world.client(max_image_bytes=len(data) - 1), world.admin, data)


def body_over_cap(world: World) -> TestResponse:
    # The body cap is the image cap plus 64 KiB of form overhead.
    return upload(world.client(max_image_bytes=1024), world.admin, b"\0" * (200 * 1024))


def batch_over_cap(world: World) -> TestResponse:
    urls = [f"https://example.org/{n}.jpg" for n in range(3)]
    return world.client(batch_max_urls=2).post("/api/v1/batches", headers=bearer(world.admin), json={"urls": urls})


def upload_batch_over_cap(world: World) -> TestResponse:
    files = [(io.BytesIO(photo_bytes("astronaut", size=64)), f"{n}.jpg") for n in range(3)]
    return world.client(batch_max_files=2).post("/api/v1/batches", headers=bearer(world.admin), data={"files": files})


def too_many_pixels(world: World) -> TestResponse:
    return upload(world.client(max_image_pixels=10_000), world.admin, photo_bytes("camera", size=160))


def text_upload(world: World) -> TestResponse:
    return upload(world.client(), world.admin, b"Just a note, not a picture.\n")


def svg_upload(world: World) -> TestResponse:
    svg = b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect width='10' height='10'/></svg>"
    return upload(world.client(), world.admin, svg)


def check_body_of_another_type(world: World) -> TestResponse:
    return world.client().post("/api/v1/checks", headers=bearer(world.admin), data="https://example.org/a.jpg",
                               content_type="text/plain")


def batch_body_of_another_type(world: World) -> TestResponse:
    return world.client().post("/api/v1/batches", headers=bearer(world.admin), data="<urls/>",
                               content_type="application/xml")


def empty_upload(world: World) -> TestResponse:
    return upload(world.client(), world.admin, b"")


def broken_image(world: World) -> TestResponse:
    return upload(world.client(), world.admin, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)


def bad_url(world: World) -> TestResponse:
    return world.client().post("/api/v1/checks", headers=bearer(world.admin), json={"url": "ftp://example.org/a.jpg"})


def field_out_of_range(world: World) -> TestResponse:
    return world.client().post("/api/v1/checks?wait=-1", headers=bearer(world.admin),
                               json={"url": "https://example.org/a.jpg"})


def bad_sha256(world: World) -> TestResponse:
    return world.client().get("/api/v1/images/not-a-sha", headers=bearer(world.admin))


def bad_idempotency_key(world: World) -> TestResponse:
    return upload(world.client(), world.admin, photo_bytes("coffee", size=96), {"Idempotency-Key": "k" * 201})


def over_rate_limit(world: World) -> TestResponse:
    client = world.client(rate_limit="2 per minute")
    for _ in range(2):
        assert client.get("/api/v1/batches", headers=bearer(world.admin)).status_code == 200
    return client.get("/api/v1/batches", headers=bearer(world.admin))


def check_without_model(world: World) -> TestResponse:
    bare = world.fresh("no-model", active_model=False)
    return upload(bare.client(), bare.admin, photo_bytes("coffee", size=96))


def database_down(world: World) -> TestResponse:
    gone = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
    return world.client(database_url=gone).get("/api/v1/checks/abc", headers=bearer(world.admin))


CASES: dict[str, Callable[[World], TestResponse]] = {
    "a JSON body that does not parse": broken_json,
    "a PNG whose compressed text chunk inflates past 1 MiB": text_chunk_bomb,
    "no API key": no_key,
    "a key that is not recognised or was revoked": unknown_key,
    "the key's role may not do this (a submitter labelling an image)": submitter_labels,
    "a URL whose host resolves to an address the fetcher may not reach": blocked_url,
    "an id that does not exist": missing_id,
    "another key's check, read by a submitter key": another_keys_check,
    "a method the address does not take": wrong_method,
    "an Idempotency-Key already used for a different request": reused_idempotency_key,
    "a promotion the guard refuses, sent without a reason": refused_promotion,
    "a roll back when no earlier version was ever active": nothing_to_roll_back,
    "a promotion of a version whose model file is missing": promotion_of_a_missing_file,
    "a training run while another is queued or running": training_busy,
    "a training run with nothing to train on": no_training_data,
    "a fine-tuning run when no version is active": fine_tune_without_model,
    "cancelling a training run that already ended": cancel_ended_run,
    "an image over FAKEWATCH_MAX_IMAGE_BYTES": image_over_byte_cap,
    "a request body over the server's cap": body_over_cap,
    "a batch over FAKEWATCH_BATCH_MAX_URLS distinct URLs": batch_over_cap,
    "an upload batch of more than FAKEWATCH_BATCH_MAX_FILES files": upload_batch_over_cap,
    "an image over FAKEWATCH_MAX_IMAGE_PIXELS": too_many_pixels,
    "a text file uploaded as the image": text_upload,
    "an SVG uploaded as the image": svg_upload,
    "a check body that is neither multipart nor JSON": check_body_of_another_type,
    "a batch body that is not JSON, text, CSV or multipart": batch_body_of_another_type,
    "an empty upload": empty_upload,
    "a file that starts like an allowed format but does not decode": broken_image,
    "a URL that is malformed or not http(s)": bad_url,
    "a field of the wrong type or out of range": field_out_of_range,
    "a malformed SHA-256 in the path": bad_sha256,
    "a malformed Idempotency-Key": bad_idempotency_key,
    "more requests than FAKEWATCH_RATE_LIMIT allows": over_rate_limit,
    "a check when no model version is active": check_without_model,
    "the database does not answer": database_down,
    "a training run while the broker does not answer": broker_down_training,
}

NOT_IN_PROCESS = {
    # No request makes the server fail on purpose: a failure of its own is a bug, answered by the catch-all handler.
    "a failure of the server's own (logged)",
}

ROWS = {case: (status, code) for status, code, case in error_table()}


def test_every_row_of_the_table_has_a_case_and_every_case_a_row() -> None:
    assert len(ROWS) == len(error_table()), "each row names a case of its own"
    assert set(ROWS) == set(CASES) | NOT_IN_PROCESS


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_api_answers_each_case_as_the_table_says(world: World, case: str) -> None:
    if case not in ROWS:
        pytest.fail(f"docs/api.md's error table has no row {case!r}")
    status, code = ROWS[case]
    response = CASES[case](world)
    assert response.is_json, response.get_data(as_text=True)[:300]
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code), response.get_json()
    assert response.get_json()["error"]["message"], "every error says what went wrong"
