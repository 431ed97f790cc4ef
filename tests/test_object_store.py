"""The two store backends keep the same promises: content addressing, atomic and idempotent writes, deletion, and
keys that cannot escape. The bucket backend is exercised against a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.checks.service import store_image
from backend.delivery.retention import delete_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.store import (
    FolderStore,
    ObjectStore,
    S3Store,
    delete_stored,
    image_store,
    local_copy,
    open_store,
    parse_store_url,
    put_image,
    read_stored,
)
from core.errors import FakewatchError, NotFound
from testbed.s3server import SeaweedServer
from testbed.stack import isolated_settings
from tests.actors import OPERATOR
from tests.test_retrain import unique_png

BYTES = b"\x89PNG not really a png, the store does not care"
SHA = hashlib.sha256(BYTES).hexdigest()


@pytest.fixture(params=["folder", "s3"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    values: dict[str, str] = {}
    if request.param == "s3":
        server: SeaweedServer = request.getfixturevalue("s3_server")
        values = server.store_settings(f"test-{uuid.uuid4().hex[:8]}")
    return isolated_settings(data_dir=tmp_path, **values)


@pytest.fixture
def store(store_settings: Settings) -> ObjectStore:
    return image_store(store_settings)


def test_the_setting_chooses_the_backend(store_settings: Settings, store: ObjectStore) -> None:
    if store_settings.image_store:
        assert isinstance(store, S3Store) and store.prefix.endswith("/images")
        assert isinstance(open_store(store_settings, "models"), S3Store)
    else:
        assert store == FolderStore(store_settings.images_dir)
        assert open_store(store_settings, "models") == FolderStore(store_settings.models_dir)


def test_content_addressed_round_trip_and_idempotent_put(store: ObjectStore) -> None:
    key = put_image(BYTES, SHA, store)
    assert key == f"{SHA[:2]}/{SHA[2:4]}/{SHA}"
    assert put_image(BYTES, SHA, store) == key  # the same bytes again: harmless
    assert read_stored(key, store) == BYTES
    assert store.exists(key)


def test_bytes_that_do_not_match_their_name_are_never_stored(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="do not hash"):
        put_image(BYTES + b"!", SHA, store)
    assert not store.exists(f"{SHA[:2]}/{SHA[2:4]}/{SHA}")


def test_deletion_and_missing_keys(store: ObjectStore) -> None:
    key = put_image(BYTES, SHA, store)
    assert delete_stored(key, store) is True
    assert delete_stored(key, store) is False
    with pytest.raises(NotFound):
        read_stored(key, store)


@pytest.mark.parametrize("key", ["../../etc/passwd", "ab/cd/../../x", "/abs", "ab/cd/" + "0" * 64])
def test_keys_cannot_escape(store: ObjectStore, key: str) -> None:
    with pytest.raises(FakewatchError):
        read_stored(key, store)


def test_model_area_keys_are_plain_names(store_settings: Settings) -> None:
    models = open_store(store_settings, "models")
    models.put("v1/model.keras", b"weights")
    assert models.read("v1/model.keras") == b"weights"
    for bad in ("../v1/model.keras", "v1/../../x", ""):
        with pytest.raises(FakewatchError):
            models.read(bad)


def test_training_reads_a_verified_local_copy(store_settings: Settings, store: ObjectStore) -> None:
    key = put_image(BYTES, SHA, store)
    copy = local_copy(key, store, store_settings.data_path / "cache")
    assert copy.read_bytes() == BYTES
    assert copy.is_relative_to(store_settings.data_path)


def test_submission_and_deletion_go_through_the_configured_store(store_settings: Settings,
                                                                  store: ObjectStore) -> None:
    upgrade_database(store_settings.database)
    data = unique_png(4242)
    with session_scope(store_settings) as session:
        image = store_image(session, data, store_settings)
        session.commit()
        key, sha = image.storage_key, image.sha256
    assert read_stored(key, store) == data
    # Nothing under the local images folder when a bucket holds the images.
    local_files = list(store_settings.images_dir.rglob("*")) if store_settings.images_dir.exists() else []
    assert bool(local_files) == (not store_settings.image_store)
    with session_scope(store_settings) as session:
        deleted = delete_image(session, store_settings, sha, actor=OPERATOR)
        session.commit()
    assert deleted.file_removed
    assert not store.exists(key)


def test_a_store_url_must_be_a_bucket() -> None:
    assert parse_store_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_store_url("s3://bucket") == ("bucket", "")
    for bad in ("/var/images", "http://bucket/x", "s3:///x"):
        with pytest.raises(ValueError, match="FAKEWATCH_IMAGE_STORE"):
            parse_store_url(bad)


@pytest.fixture
def bucket_settings(s3_server: SeaweedServer, tmp_path: Path) -> Iterator[Settings]:
    yield isolated_settings(data_dir=tmp_path, **s3_server.store_settings(f"raw-{uuid.uuid4().hex[:8]}"))


def test_objects_land_under_the_prefix(bucket_settings: Settings, s3_server: SeaweedServer) -> None:
    put_image(BYTES, SHA, image_store(bucket_settings))
    prefix = parse_store_url(bucket_settings.image_store)[1]
    listed = s3_server.client().list_objects_v2(Bucket="fakewatch", Prefix=prefix)
    assert [item["Key"] for item in listed["Contents"]] == [f"{prefix}/images/{SHA[:2]}/{SHA[2:4]}/{SHA}"]
