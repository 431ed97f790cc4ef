"""Re-scoring: after a promotion, every image with a flagged verdict scored again by the version active now, as a
batch, so the review queue reflects the new model."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.checks.handoff import send_checks
from backend.settings import Settings
from backend.storage.schema import Batch, Check
from backend.training.versions import active_version
from core.enums import CheckStatus, Source
from core.errors import FakewatchError


def rescore_flagged(session: Session, settings: Settings, requested_by: str = "") -> Batch | None:
    """Score every image with a flagged verdict again, as a batch, with the version active now. Commits (the
    workers must see the checks before their ids are sent)."""
    version = active_version(session)
    if version is None:
        raise FakewatchError("no_active_model", "No version is active to re-score with.", 409)
    image_ids = list(session.scalars(
        select(Check.image_id).where(Check.flagged.is_(True), Check.status == CheckStatus.DONE,
                                     Check.image_id.is_not(None))
        .group_by(Check.image_id)))
    if not image_ids:
        return None
    batch = Batch(name=f"Re-score flagged images with {version.name}" + (f" ({requested_by})" if requested_by else ""),
                  total=len(image_ids))
    session.add(batch)
    session.flush()
    checks = [Check(image_id=image_id, source=Source.BATCH, batch_id=batch.id) for image_id in image_ids]
    session.add_all(checks)
    session.commit()
    send_checks(session, settings, [check.id for check in checks])
    return batch
