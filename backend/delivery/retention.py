"""Deleting stored images: on request (``DELETE /api/v1/images/<sha256>``, ``fakewatch images delete``) or by
retention (``FAKEWATCH_RETENTION_DAYS``: images nobody reviewed, that many days after they were first seen).

What a deletion removes and what it keeps:

- removed: the original bytes in the image store (and so every preview made from them: the console's thumbnails
  are made from the stored file on demand); the image is never served again (404) nor used for training;
- kept: the image row (marked ``deleted_at``) and every check of it with its verdict, for the audit trail; the
  checks read ``"image": null`` with ``"image_deleted_at"``; the PDQ hash and the moderators' labels, so a re-upload
  of a near-copy of a takedown is still matched. ``purge`` removes those too (and the image's provenance record).

The same bytes submitted again later are a new submission: they are stored again and the image row is live again
(backend/checks/service.py: store_image); the earlier checks stay marked deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from backend.identity.access import Actor, require
from backend.identity.audit import record
from backend.settings import Settings
from backend.storage.schema import Check, Image, Review, utcnow
from backend.storage.store import delete_stored, image_store, is_sha256
from core.enums import AuditAction, Permission
from core.errors import FakewatchError, NotFound

log = logging.getLogger("fakewatch.retention")

# Images deleted per retention pass: each is a file removal and two updates; the next pass takes the rest.
RETENTION_BATCH = 500


@dataclass(frozen=True)
class Deleted:
    sha256: str
    checks: int
    purged: bool
    file_removed: bool


def delete_image(session: Session, settings: Settings, sha256: str, purge: bool = False, *, actor: Actor) -> Deleted:
    """Delete one image's bytes and blank it from its checks (no commit; an admin's action, audited). NotFound when
    no stored image has this SHA-256, or it was deleted already (and no purge is asked)."""
    require(actor, Permission.DELETE)
    sha256 = sha256.strip().lower()
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    image = session.scalar(select(Image).where(Image.sha256 == sha256))
    if image is None or (image.deleted_at is not None and not purge):
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    return _delete(session, settings, image, purge, actor, AuditAction.PURGE if purge else AuditAction.DELETE)


def _delete(session: Session, settings: Settings, image: Image, purge: bool, actor: Actor,
            action: AuditAction) -> Deleted:
    # The event first: on SQLite a savepoint opened before it would commit the change without it.
    record(session, actor, action, ("image", image.sha256),
           {"deleted_at": image.deleted_at.isoformat() if image.deleted_at else None, "pdq": image.pdq_hex is not None},
           {"purge": purge})
    now = utcnow()
    removed = delete_stored(image.storage_key, image_store(settings))
    image.deleted_at = image.deleted_at or now
    checks = session.execute(
        update(Check).where(Check.image_id == image.id, Check.image_deleted_at.is_(None))
        .values(image_deleted_at=now).execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if purge:
        image.pdq_hex = None
        image.pdq_quality = None
        image.provenance = None
        session.execute(delete(Review).where(Review.image_id == image.id))
    session.flush()
    log.info("deleted image %s (%d checks blanked%s)", image.sha256, checks, ", purged" if purge else "")
    return Deleted(sha256=image.sha256, checks=int(checks or 0), purged=purge, file_removed=removed)


def delete_images(session: Session, settings: Settings, sha256s: Sequence[str], purge: bool = False, *,
                  actor: Actor) -> list[Deleted]:
    return [delete_image(session, settings, sha256, purge, actor=actor) for sha256 in sha256s]


def expired_images(session: Session, settings: Settings, limit: int = RETENTION_BATCH) -> list[Image]:
    """Live images first seen more than ``retention_days`` ago that nobody reviewed."""
    if settings.retention_days is None:
        return []
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    reviewed = exists().where(Review.image_id == Image.id)
    return list(session.scalars(
        select(Image).where(Image.deleted_at.is_(None), Image.first_seen < cutoff, ~reviewed)
        .order_by(Image.first_seen).limit(limit)))


def apply_retention(session: Session, settings: Settings) -> int:
    """One retention pass (the scoring workers' periodic work): delete expired images and commit; returns how many."""
    images = expired_images(session, settings)
    for image in images:
        _delete(session, settings, image, False, Actor.system("retention"), AuditAction.RETENTION_DELETE)
    session.commit()
    if images:
        log.info("retention: deleted %d images unreviewed for %s days", len(images), settings.retention_days)
    return len(images)
