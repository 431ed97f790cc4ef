"""The audit trail: one append-only event per state-changing action, written in the action's own transaction.

Call ``record(session, actor, AuditAction.X, ("image", sha256), before={...}, after={...})`` inside the service
that changes state, before the caller commits: the event and the change are committed (or rolled back) together.
``before`` and ``after`` are small JSON-able dicts of what changed (None where the object did not exist / no longer
exists). Events are never updated or deleted (backend/storage/schema.py refuses it in the ORM, migration 0005 in the
database). ``find_events`` reads them back for the console's Audit page, an image's history and
`fakewatch audit`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.identity.access import Actor
from backend.storage.schema import AuditEvent, isoformat_z, utcnow
from core.enums import AuditAction

ObjectRef = tuple[str, object]
EVENT_COLUMNS = ("id", "at", "actor_kind", "actor_id", "actor_name", "actor_role", "address", "action",
                 "object_type", "object_id", "before", "after")


def record(session: Session, actor: Actor, action: AuditAction | str, obj: ObjectRef,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
           address: str | None = None) -> AuditEvent:
    """Add one event to the session (flushed, not committed: it commits with the action it records)."""
    object_type, object_id = obj
    event = AuditEvent(at=utcnow(), actor_kind=actor.kind, actor_id=actor.id, actor_name=actor.name[:100],
                       actor_role=actor.role, address=address, action=str(action), object_type=object_type,
                       object_id=str(object_id)[:100], before=_jsonable(before), after=_jsonable(after))
    session.add(event)
    session.flush()
    return event


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Round-trip through JSON so timestamps and enums are stored as the text they print as."""
    if value is None:
        return None
    loaded: dict[str, Any] = json.loads(json.dumps(value, default=_default))
    return loaded


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return isoformat_z(value)
    return str(value)


@dataclass(frozen=True)
class EventFilters:
    actor: str | None = None          # a name, matched exactly
    actions: Sequence[str] = ()
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def find_events(session: Session, filters: EventFilters | None = None, limit: int | None = 1000) -> list[AuditEvent]:
    """Events matching the filters, newest first (at most ``limit``; None for all)."""
    filters = filters or EventFilters()
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if filters.actor:
        query = query.where(AuditEvent.actor_name == filters.actor)
    if filters.actions:
        query = query.where(AuditEvent.action.in_(list(filters.actions)))
    if filters.object_type:
        query = query.where(AuditEvent.object_type == filters.object_type)
    if filters.object_id:
        query = query.where(AuditEvent.object_id == filters.object_id)
    if filters.since:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until:
        query = query.where(AuditEvent.at < filters.until)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def event_dict(event: AuditEvent) -> dict[str, Any]:
    """An event as `fakewatch audit` prints it and the CSV export writes it."""
    return {"id": event.id, "at": isoformat_z(event.at), "actor_kind": event.actor_kind.value,
            "actor_id": event.actor_id, "actor_name": event.actor_name, "actor_role": event.actor_role.value if event.actor_role else None,
            "address": event.address, "action": event.action, "object_type": event.object_type,
            "object_id": event.object_id, "before": event.before, "after": event.after}


def events_csv(events: Iterable[AuditEvent]) -> str:
    """CSV with a header; ``before`` and ``after`` as JSON text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EVENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for event in events:
        row = event_dict(event)
        row["before"] = json.dumps(row["before"]) if row["before"] is not None else ""
        row["after"] = json.dumps(row["after"]) if row["after"] is not None else ""
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()
