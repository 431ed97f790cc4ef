"""A batch's life: created with one queued check per URL, running once a worker claims one of them, done when the
last one ends (written then, by whoever ended it; reading a batch never writes), or cancelled by a user.

A batch item's check id is the batch's random item prefix followed by the item's position in hex, so ordering a
batch's checks by id gives the input order without another column."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, exists, func, insert, select, update
from sqlalchemy.orm import Session

from backend.batches.lists import Entry, ParsedList, validate_entries
from backend.checks.handoff import send_checks
from backend.checks.metrics import CHECKS_ACCEPTED
from backend.identity.access import Actor, require, visible_or_not_found
from backend.identity.audit import record
from backend.settings import Settings
from backend.storage.db import get_or_not_found
from backend.storage.schema import Batch, Check, new_id, utcnow
from core.enums import PENDING_CHECK_STATUSES, AuditAction, BatchStatus, CheckStatus, Permission, Source
from core.errors import FakewatchError

MAX_NAME_CHARS = 200


def new_batch(session: Session, total: int, invalid: list[dict[str, Any]], *, name: str, api_key_id: int | None,
              callback_url: str | None) -> Batch:
    """The queued batch row of ``total`` items, flushed (no commit), its items still to add."""
    if len(name) > MAX_NAME_CHARS:
        raise FakewatchError("invalid_request", f"name must be at most {MAX_NAME_CHARS} characters.")
    batch = Batch(id=new_id(), name=name, status=BatchStatus.QUEUED, total=total, invalid=invalid,
                  api_key_id=api_key_id, callback_url=callback_url, created_at=utcnow())
    session.add(batch)
    session.flush()
    return batch


def item_ids(count: int) -> list[str]:
    """The check ids of a batch's ``count`` items: a random prefix and the position, so id order is input order."""
    prefix = new_id()[:24]
    return [f"{prefix}{position:08x}" for position in range(count)]


@dataclass
class CreatedBatch:
    batch: Batch
    check_ids: list[str]
    duplicates: int


def create_batch(session: Session, parsed: ParsedList, *, name: str = "", api_key_id: int | None = None,
                 callback_url: str | None = None) -> CreatedBatch:
    """Insert the batch and one queued check per URL in bulk (no commit: :func:`submit_list` commits and sends)."""
    batch = new_batch(session, len(parsed.urls), parsed.invalid, name=name, api_key_id=api_key_id,
                      callback_url=callback_url)
    now = batch.created_at
    ids = item_ids(len(parsed.urls))
    rows = [{"id": check_id, "source": Source.BATCH, "source_url": url, "batch_id": batch.id,
             "status": CheckStatus.QUEUED, "attempts": 0, "flagged": False, "cached": False, "api_key_id": api_key_id,
             "created_at": now, "queued_at": now}
            for check_id, url in zip(ids, parsed.urls, strict=True)]
    # A Core insert of the table: one executemany, without the ORM's per-row bookkeeping.
    session.execute(insert(cast(Table, Check.__table__)), rows)
    return CreatedBatch(batch=batch, check_ids=ids, duplicates=parsed.duplicates)


def submit_list(session: Session, entries: Sequence[Entry], settings: Settings, *, name: str = "",
                api_key_id: int | None = None, callback_url: str | None = None,
                before_commit: Callable[[CreatedBatch], None] | None = None) -> CreatedBatch:
    """Validate the lines, insert the batch, commit, then send its checks to the workers: after the commit, so a
    worker never sees an item that is not in the database yet. ``callback_url`` (checked by the caller) is posted
    the batch when it finishes. ``before_commit`` writes what must be committed with the batch (the API's record
    of an ``Idempotency-Key``)."""
    parsed = validate_entries(entries, settings.batch_max_urls)
    created = create_batch(session, parsed, name=name, api_key_id=api_key_id, callback_url=callback_url)
    if before_commit is not None:
        before_commit(created)
    session.commit()
    CHECKS_ACCEPTED.labels("batch").inc(len(created.check_ids))
    send_checks(session, settings, created.check_ids)
    return created


def get_batch(session: Session, batch_id: str, actor: Actor | None = None) -> Batch:
    """The batch; ``not_found`` when ``actor`` (None: a trusted internal caller) may not read it."""
    batch = get_or_not_found(session, Batch, batch_id, "batch")
    visible_or_not_found(actor, batch.api_key_id, "batch", batch_id)
    return batch


def cancel_batch(session: Session, batch_id: str, *, actor: Actor) -> Batch:
    """Cancel the items not started yet; running ones finish. A finished batch is left as it is."""
    batch = get_batch(session, batch_id, actor)
    require(actor, Permission.CANCEL_BATCH)
    if batch.status.is_final:
        return batch
    before = {"status": batch.status.value}
    now = utcnow()
    session.execute(
        update(Check).where(Check.batch_id == batch_id, Check.status == CheckStatus.QUEUED)
        .values(status=CheckStatus.CANCELLED, finished_at=now, error_code="cancelled",
                error_message="The batch was cancelled before this item was checked.")
        .execution_options(synchronize_session=False)
    )
    batch.status = BatchStatus.CANCELLED
    batch.finished_at = now
    session.flush()
    record(session, actor, AuditAction.BATCH_CANCEL, ("batch", batch.id), before, {"status": batch.status.value})
    return batch


def mark_batches_running(session: Session, claimed_check_ids: Sequence[str]) -> None:
    """A worker claimed these checks: their batches still queued are running now (no commit)."""
    batch_ids = (select(Check.batch_id).where(Check.id.in_(list(claimed_check_ids)), Check.batch_id.is_not(None))
                 .distinct().scalar_subquery())
    session.execute(update(Batch).where(Batch.id.in_(batch_ids), Batch.status == BatchStatus.QUEUED)
                    .values(status=BatchStatus.RUNNING).execution_options(synchronize_session=False))


def settle_batches(session: Session, batch_ids: Iterable[str]) -> list[str]:
    """Mark done each of these batches none of whose items is queued or running any more, with the time its last
    item ended (no commit); returns the ids this call marked done (their callbacks are owed). Idempotent, and a
    cancelled batch stays cancelled."""
    items = Check.batch_id == Batch.id
    last_ended = (select(func.max(Check.finished_at)).where(items, Check.status != CheckStatus.CANCELLED)
                  .scalar_subquery())
    return list(session.scalars(
        update(Batch)
        .where(Batch.id.in_(list(batch_ids)), Batch.status.in_([BatchStatus.QUEUED, BatchStatus.RUNNING]),
               ~exists().where(items, Check.status.in_(PENDING_CHECK_STATUSES)))
        .values(status=BatchStatus.DONE, finished_at=func.coalesce(last_ended, utcnow()))
        .returning(Batch.id)
        .execution_options(synchronize_session=False)
    ))
