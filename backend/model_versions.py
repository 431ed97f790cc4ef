"""Model versions: registering a saved model (from its metadata JSON, without TensorFlow) and choosing
which one is active. Promotion is one transaction, so exactly one version is active at any time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.errors import FakewatchError, NotFound
from backend.schema import ModelVersion, utcnow
from models.metadata import SHIPPED_MODEL, file_sha256, metadata_path, read_metadata


def _checked_metadata(model_path: Path) -> dict[str, Any]:
    meta_file = metadata_path(model_path)
    if not model_path.is_file() or not meta_file.is_file():
        raise FakewatchError("invalid_model", f"{model_path} needs its metadata file {meta_file.name} beside it.")
    return read_metadata(model_path)


def register_model(session: Session, model_path: Path, activate: bool = False) -> ModelVersion:
    """Register a saved model; registering the same version name again returns the existing row."""
    model_path = model_path.resolve()
    metadata = _checked_metadata(model_path)
    sha = file_sha256(model_path)
    if metadata.get("sha256") and metadata["sha256"] != sha:
        raise FakewatchError("invalid_model", f"{model_path.name} does not match the SHA-256 in its metadata: the file is damaged or was replaced.")
    name = str(metadata.get("name") or model_path.stem)
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        version = ModelVersion(
            name=name,
            file=str(model_path),
            sha256=sha,
            architecture=str(metadata.get("architecture", "default")),
            metrics=metadata.get("metrics", {}),
            details=metadata,
            threshold=float(metadata.get("threshold", 0.5)),
            band=float(metadata.get("band", 0.0)),
        )
        session.add(version)
        session.flush()
    if activate:
        activate_version(session, version.id)
    return version


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))


def require_active_version(session: Session) -> ModelVersion:
    version = active_version(session)
    if version is None:
        raise FakewatchError(
            "no_active_model",
            "No model version is active, so nothing can be scored. Run `fakewatch db upgrade` to register the "
            "shipped default model, or promote a version from the console.",
            503,
        )
    return version


def activate_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"There is no model version {version_id}.")
    session.execute(update(ModelVersion).where(ModelVersion.id != version_id).values(active=False))
    version.active = True
    version.activated_at = utcnow()
    session.flush()
    return version


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())))


def ensure_shipped_model(session: Session) -> ModelVersion | None:
    """On a fresh database, register the shipped default and make it active, so the first check can be scored."""
    if active_version(session) is not None or not SHIPPED_MODEL.is_file():
        return active_version(session)
    return register_model(session, SHIPPED_MODEL, activate=True)
