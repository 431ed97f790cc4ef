"""Which scoring processes can score now: each writes its row once its model is loaded and warm, refreshes it while
it lives, and removes it when it stops. `fakewatch up` waits for one before it says "Ready", and a keyed /readyz
shows them; an anonymous /readyz stays about the API itself (a cluster may scale workers to zero)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.storage.schema import ScoringWorker, utcnow

# A row not refreshed for this long is a process that died without removing it.
FRESH_FOR_S = 20.0
# How often a live process refreshes its row.
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class WorkersState:
    """The scoring processes seen recently, and how many of them hold the active model."""

    ready: int
    total: int
    versions: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"ready": self.ready, "seen": self.total, "versions": self.versions}


def announce(session: Session, name: str, model_version: str, runtime: str) -> None:
    """This process can score ``model_version`` now (written again on every heartbeat)."""
    row = session.get(ScoringWorker, name)
    now = utcnow()
    if row is None:
        session.add(ScoringWorker(name=name, model_version=model_version, runtime=runtime, ready_at=now, seen_at=now))
    else:
        if row.model_version != model_version:
            row.ready_at = now
        row.model_version, row.runtime, row.seen_at = model_version, runtime, now


def forget(session: Session, name: str) -> None:
    session.execute(delete(ScoringWorker).where(ScoringWorker.name == name))


def workers_state(session: Session, active_version: str | None) -> WorkersState:
    """Scoring processes refreshed within ``FRESH_FOR_S``; ``ready`` counts those holding the active version."""
    since = utcnow() - timedelta(seconds=FRESH_FOR_S)
    rows = session.scalars(select(ScoringWorker).where(ScoringWorker.seen_at >= since)).all()
    versions: dict[str, int] = {}
    for row in rows:
        versions[row.model_version] = versions.get(row.model_version, 0) + 1
    return WorkersState(ready=versions.get(active_version or "", 0), total=len(rows), versions=versions)
