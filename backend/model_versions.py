"""Model versions: registering a saved model (from its metadata JSON, without TensorFlow) and choosing which one
is active: promoting a candidate, rolling back to an earlier version. Each change of the active version is one
transaction, so exactly one version is active at any time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.access import Actor, require
from backend.audit import record
from backend.db import get_or_not_found
from backend.schema import ModelVersion, utcnow
from core.enums import AuditAction, Permission
from core.errors import FakewatchError
from core.model_metadata import SHIPPED_MODEL, file_sha256, metadata_path, read_metadata


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
        raise FakewatchError("invalid_model", f"{model_path.name} does not match the SHA-256 in its metadata: the "
                                              "file is damaged or was replaced.")
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


def get_version(session: Session, version_id: int) -> ModelVersion:
    return get_or_not_found(session, ModelVersion, version_id, "model version")


def activate_version(session: Session, version_id: int) -> ModelVersion:
    """Make this version the only active one (no check that its file is there: see :func:`promote_version`)."""
    version = get_version(session, version_id)
    session.execute(update(ModelVersion).where(ModelVersion.id != version_id).values(active=False))
    version.active = True
    version.activated_at = utcnow()
    session.flush()
    return version


def promote_version(session: Session, version_id: int, *, actor: Actor) -> ModelVersion:
    """Make a version active in one transaction; scoring workers switch before their next chunk of checks."""
    require(actor, Permission.PROMOTE)
    return _switch_audited(session, version_id, actor, AuditAction.PROMOTE)


def _switch_audited(session: Session, version_id: int, actor: Actor, action: AuditAction) -> ModelVersion:
    version = get_version(session, version_id)
    if not Path(version.file).is_file():
        raise FakewatchError("invalid_model", f"The file of version {version.name} is missing: {version.file}.", 409)
    before = active_version(session)
    activated = activate_version(session, version_id)
    record(session, actor, action, ("model_version", activated.id),
           {"active": before.name if before else None, "active_id": before.id if before else None},
           {"active": activated.name, "active_id": activated.id})
    return activated


def previous_version(session: Session) -> ModelVersion | None:
    """The version that was active before the current one (the latest activated among the inactive)."""
    return session.scalar(select(ModelVersion).where(ModelVersion.active.is_(False),
                                                     ModelVersion.activated_at.is_not(None))
                          .order_by(ModelVersion.activated_at.desc()).limit(1))


def roll_back(session: Session, version_id: int | None = None, *, actor: Actor) -> ModelVersion:
    """Re-activate ``version_id``, or the version active before the current one."""
    require(actor, Permission.PROMOTE)
    if version_id is None:
        previous = previous_version(session)
        if previous is None:
            raise FakewatchError("nothing_to_roll_back", "No earlier version has ever been active.", 409)
        version_id = previous.id
    return _switch_audited(session, version_id, actor, AuditAction.ROLL_BACK)


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())))


def ensure_shipped_model(session: Session) -> ModelVersion | None:
    """On a fresh database, register the shipped default and make it active, so the first check can be scored."""
    if active_version(session) is not None or not SHIPPED_MODEL.is_file():
        return active_version(session)
    return register_model(session, SHIPPED_MODEL, activate=True)
