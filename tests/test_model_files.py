"""Model versions travel through the store and the database: registering publishes every file and records its
SHA-256; a host with an empty folder fetches and verifies them; a file that does not match is never used."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import Check, ModelVersion
from backend.storage.store import MODELS, S3Store, open_store
from backend.training.model_files import FILES_KEY, ModelUnverified, fetch_verified, version_files
from backend.training.versions import promote_version, register_model
from core.errors import FakewatchError
from core.model_metadata import file_sha256
from testbed.s3server import SeaweedServer
from testbed.stack import isolated_settings
from tests.actors import OPERATOR


def saved_version(folder: Path, name: str, extra: bool = False) -> Path:
    """A registrable version: model file, metadata, and (``extra``) an exported file its metadata lists."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(f"weights of {name}".encode())
    metadata: dict[str, object] = {"name": name, "threshold": 0.5, "band": 0.1}
    if extra:
        (folder / "model.onnx").write_bytes(b"exported graph")
        metadata["files"] = [{"path": "model.keras", "role": "keras", "sha256": ""},  # as models/export.py lists them
                             {"path": "model.onnx", "role": "onnx", "sha256": hashlib.sha256(b"exported graph").hexdigest()}]
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder / "model.keras"


@pytest.fixture
def bucket(s3_server: SeaweedServer, tmp_path: Path) -> dict[str, str]:
    return s3_server.store_settings(f"models-{uuid.uuid4().hex[:8]}")


def host(tmp_path: Path, name: str, bucket: dict[str, str], database: str) -> Settings:
    """One host's settings: its own empty data folder, the shared database and bucket."""
    return isolated_settings(data_dir=tmp_path / name, database_url=database, **bucket)


def test_a_version_reaches_another_host_through_the_bucket(tmp_path: Path, bucket: dict[str, str]) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade_database(database)
    trainer, worker = host(tmp_path, "trainer", bucket, database), host(tmp_path, "worker", bucket, database)
    model = saved_version(tmp_path / "out" / "v1", "v1", extra=True)
    with session_scope(trainer) as session:
        version = register_model(session, model, activate=True, store=open_store(trainer, MODELS))
        session.commit()
        assert version.file.startswith("s3://") and version.file.endswith("/models/v1/model.keras")
        assert [name for name, _ in version_files(version)] == ["model.keras", "model.json", "model.onnx"]
        assert version.details[FILES_KEY][0]["sha256"] == file_sha256(model)
    store = open_store(worker, MODELS)
    assert isinstance(store, S3Store) and store.read("v1/model.onnx") == b"exported graph"

    with session_scope(worker) as session:
        fetched = fetch_verified(version_row(session, "v1"), worker)
    assert fetched.is_relative_to(worker.data_path) and fetched.read_bytes() == model.read_bytes()
    assert json.loads((fetched.parent / "model.json").read_text())["name"] == "v1"
    assert (fetched.parent / "model.onnx").read_bytes() == b"exported graph"


def test_a_file_that_does_not_match_is_never_used(tmp_path: Path, bucket: dict[str, str]) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade_database(database)
    trainer, worker = host(tmp_path, "trainer", bucket, database), host(tmp_path, "worker", bucket, database)
    with session_scope(trainer) as session:
        register_model(session, saved_version(tmp_path / "out" / "v1", "v1"), store=open_store(trainer, MODELS))
        session.commit()
    store = open_store(worker, MODELS)
    store.put("v1/model.keras", b"tampered weights")  # replaced in the bucket after registration
    with session_scope(worker) as session, pytest.raises(ModelUnverified, match="does not match"):
        fetch_verified(version_row(session, "v1"), worker)
    assert not (worker.data_path / "model-cache" / "v1" / "model.keras").exists()

    store.delete("v1/model.json")
    with session_scope(worker) as session, pytest.raises(ModelUnverified):
        fetch_verified(version_row(session, "v1"), worker)


def test_a_cached_copy_is_checked_again(tmp_path: Path) -> None:
    settings = isolated_settings(data_dir=tmp_path / "local")
    upgrade_database(settings.database)
    with session_scope(settings) as session:
        version = register_model(session, saved_version(settings.models_dir / "v1", "v1"),
                                 store=open_store(settings, MODELS))
        session.commit()
        first = fetch_verified(version, settings)
        first.write_bytes(b"changed on this host's disk")
        again = fetch_verified(version, settings)
    assert again == first and again.read_bytes() == b"weights of v1"


def test_promotion_from_a_host_without_the_files(tmp_path: Path, bucket: dict[str, str]) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade_database(database)
    trainer, console = host(tmp_path, "trainer", bucket, database), host(tmp_path, "console", bucket, database)
    with session_scope(trainer) as session:
        register_model(session, saved_version(tmp_path / "out" / "v1", "v1"), activate=True,
                       store=open_store(trainer, MODELS))
        two = register_model(session, saved_version(tmp_path / "out" / "v2", "v2"), store=open_store(trainer, MODELS))
        session.commit()
        two_id = two.id
    with session_scope(console) as session:
        promoted = promote_version(session, two_id, console, actor=OPERATOR, override_reason="tested by hand today")
        assert promoted.active
        session.commit()
    open_store(console, MODELS).delete("v2/model.keras")
    with session_scope(console) as session, pytest.raises(FakewatchError) as missing:
        promote_version(session, two_id, console, actor=OPERATOR, override_reason="tested by hand today")
    assert missing.value.code == "invalid_model"


def version_row(session: Session, name: str) -> ModelVersion:
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    assert version is not None
    return version


def test_a_worker_never_scores_with_a_model_it_cannot_verify(database: Settings, tiny_model_path: Path,
                                                             tmp_path: Path) -> None:
    from backend.checks.service import submit_image  # noqa: PLC0415
    from testbed.images import photo_bytes  # noqa: PLC0415
    from worker import detectors  # noqa: PLC0415 - TensorFlow, as a scoring worker
    from worker.scoring import score_checks  # noqa: PLC0415

    model = version_copy_of(tiny_model_path, tmp_path / "out", f"tiny-{uuid.uuid4().hex[:6]}")
    store = open_store(database, MODELS)
    with session_scope(database) as session:
        version = register_model(session, model, activate=True, store=store)
        session.commit()
        name = version.name
    detectors._loaded.clear()
    published = database.models_dir / name / "model.keras"
    published.write_bytes(b"not the registered weights")  # the published copy is damaged
    (tmp_path / "out" / "model.keras").unlink()  # and the folder it was registered from is gone

    def score(photo: str) -> Check:
        with session_scope(database) as session:
            check_id = submit_image(session, photo_bytes(photo), database).check.id
            session.commit()
        score_checks([check_id], database)
        with session_scope(database) as session:
            found = session.get(Check, check_id)
            assert found is not None
            session.expunge(found)
            return found

    refused = score("coffee")
    assert refused.status.value == "failed" and refused.error_code == "model_unavailable"
    assert "does not match its recorded SHA-256" in (refused.error_message or "")
    published.write_bytes(tiny_model_path.read_bytes())  # repaired: the next check is scored with it
    scored = score("chelsea")
    assert scored.status.value == "done" and scored.score is not None


def version_copy_of(model: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(model, folder / "model.keras")
    metadata = json.loads(model.with_suffix(".json").read_text())
    metadata.update(name=name)
    for key in ("sha256", "files", "runtime"):  # the copy is the .keras alone, without the exported file
        metadata.pop(key, None)
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder / "model.keras"
