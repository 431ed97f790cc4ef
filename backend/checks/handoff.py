"""Handing accepted checks to the broker without losing them: the database row is the truth, the message only
carries its id. When the broker refuses a message (Redis down, the embedded broker's file locked), the checks stay
queued and are flagged ``unsent``; the sweeper sends them once the broker answers again (worker/sweeper.py), so the
client still gets its 202 and the check's id."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.checks.dispatch import enqueue_scoring
from backend.settings import Settings
from backend.storage.schema import Check, utcnow
from core.enums import CheckStatus

log = logging.getLogger("fakewatch.delivery")


def send_checks(session: Session, settings: Settings, check_ids: Sequence[str]) -> bool:
    """Send committed, queued checks to the scoring workers; when the broker fails, flag them unsent (and commit)
    instead of failing the request that accepted them. True when they were sent."""
    if not check_ids:
        return True
    try:
        enqueue_scoring(settings, check_ids)
    except Exception as error:  # noqa: BLE001 - whatever the broker's failure, the rows are safe and get sent later
        log.warning("the broker refused %d checks (%s); the sweeper sends them when it is back", len(check_ids), error)
        session.rollback()
        mark_unsent(session, check_ids)
        return False
    return True


def mark_unsent(session: Session, check_ids: Sequence[str]) -> None:
    """Note that the broker refused these accepted checks' message (commits)."""
    ids = list(check_ids)
    for start in range(0, len(ids), 500):
        session.execute(update(Check).where(Check.id.in_(ids[start:start + 500]), Check.status == CheckStatus.QUEUED)
                        .values(unsent=True).execution_options(synchronize_session=False))
    session.commit()


def unsent_checks(session: Session, limit: int = 5000) -> list[str]:
    """Queued checks whose message the broker refused, oldest first."""
    return list(session.scalars(select(Check.id).where(Check.status == CheckStatus.QUEUED, Check.unsent.is_(True))
                                .order_by(Check.queued_at).limit(limit)))


def resend_unsent(session: Session, settings: Settings) -> int:
    """Send the checks the broker refused earlier (raises while it still refuses); returns how many were sent."""
    ids = unsent_checks(session)
    if not ids:
        return 0
    enqueue_scoring(settings, ids)
    for start in range(0, len(ids), 500):
        session.execute(update(Check).where(Check.id.in_(ids[start:start + 500]))
                        .values(unsent=False, queued_at=utcnow()).execution_options(synchronize_session=False))
    session.commit()
    return len(ids)
