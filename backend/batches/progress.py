"""How far a batch has come: its items counted per status in the database, its recent rate and the time left.
Read-only: a batch's own status is written by backend/batches/lifecycle.py as its items move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select
from sqlalchemy.orm import Session

from backend.checks.verdicts import flagged_when_read, latest_review_label
from backend.identity.access import Actor, owner_key_id
from backend.storage.schema import Batch, CallbackDelivery, Check, utcnow
from core.enums import BatchStatus, CheckStatus

# Rates are measured over the last RATE_WINDOW_S seconds, so the time left follows the current pace.
RATE_WINDOW_S = 30.0


@dataclass
class Progress:
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    flagged: int = 0
    recent: int = 0  # items finished in the rate window
    last_finished: datetime | None = None

    @property
    def pending(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class BatchSummary:
    """A batch with its items' progress and its callback delivery (once one is owed): what a batch looks like to the
    API (backend/shapes.py's BatchOut) and the console."""

    batch: Batch
    progress: Progress
    delivery: CallbackDelivery | None = None

    @property
    def rate_per_s(self) -> float | None:
        """Items finished per second: over the last window while running, over the whole batch once finished."""
        rate = self._rate()
        return round(rate, 3) if rate is not None else None

    def _rate(self) -> float | None:
        batch, progress = self.batch, self.progress
        processed = progress.done + progress.failed
        if batch.status.is_final or not progress.pending:
            end = progress.last_finished or batch.finished_at
            if not processed or end is None:
                return None
            elapsed = (end - batch.created_at).total_seconds()
            return processed / elapsed if elapsed > 0 else None
        elapsed = min(RATE_WINDOW_S, (utcnow() - batch.created_at).total_seconds())
        return progress.recent / elapsed if elapsed > 0 and progress.recent else None

    @property
    def eta_s(self) -> float | None:
        """Seconds until every item is final at the current rate; 0 when nothing is left, None when unknown."""
        # A cancelled batch's queued items were cancelled with it: only those already running are left.
        remaining = self.progress.running if self.batch.status == BatchStatus.CANCELLED else self.progress.pending
        if not remaining:
            return 0.0
        rate = self._rate()
        return round(remaining / rate, 1) if rate else None


@cache
def _progress_query() -> Select[str | None, CheckStatus, int, Any, Any, datetime | None]:
    """Built once, the batches and the window's start bound at each call: building it (a correlated subquery
    and three CASEs) cost a poll of a batch more CPU than running it."""
    return (select(Check.batch_id, Check.status, func.count(),
                   # As exports count it: a moderator's label of the bytes wins over what scoring flagged.
                   func.sum(case((flagged_when_read(latest_review_label()), 1), else_=0)),
                   func.sum(case((Check.finished_at >= bindparam("window_start", type_=Check.finished_at.type), 1),
                                 else_=0)),
                   func.max(Check.finished_at))
            .where(Check.batch_id.in_(bindparam("batch_ids", expanding=True)))
            .group_by(Check.batch_id, Check.status))


def progress_of(session: Session, batch_ids: Sequence[str]) -> dict[str, Progress]:
    """Counts per status (and flagged, reviews winning, and recently finished) for several batches in one query."""
    window_start = utcnow() - timedelta(seconds=RATE_WINDOW_S)
    rows = session.execute(_progress_query(), {"batch_ids": list(batch_ids), "window_start": window_start})
    progress = {batch_id: Progress() for batch_id in batch_ids}
    for batch_id, status, count, flagged, recent, last in rows:
        entry = progress[batch_id]
        setattr(entry, CheckStatus(status).value, int(count))
        entry.flagged += int(flagged or 0)
        if status in (CheckStatus.DONE, CheckStatus.FAILED):
            entry.recent += int(recent or 0)
        if last is not None and status != CheckStatus.CANCELLED:
            entry.last_finished = max(filter(None, (entry.last_finished, last)))
    return progress


def deliveries_of_batches(session: Session, batches: Sequence[Batch]) -> dict[str, CallbackDelivery]:
    """The callback deliveries owed for these batches, by batch id, in one query (none without a callback URL)."""
    ids = [batch.id for batch in batches if batch.callback_url]
    if not ids:
        return {}
    rows = session.scalars(select(CallbackDelivery).where(CallbackDelivery.batch_id.in_(ids)))
    return {row.batch_id: row for row in rows if row.batch_id is not None}


def summarize(session: Session, batch: Batch) -> BatchSummary:
    return BatchSummary(batch=batch, progress=progress_of(session, [batch.id])[batch.id],
                        delivery=deliveries_of_batches(session, [batch]).get(batch.id))


def list_batches(session: Session, page: int = 1, per_page: int = 20,
                 actor: Actor | None = None) -> tuple[list[BatchSummary], int]:
    """One page of the batches ``actor`` may read (None: all), newest first, with their total number."""
    owner = owner_key_id(actor)
    mine = Batch.api_key_id == owner if owner is not None else None
    count = select(func.count()).select_from(Batch)
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id).offset((page - 1) * per_page).limit(per_page)
    if mine is not None:
        count, query = count.where(mine), query.where(mine)
    total = session.scalar(count) or 0
    batches = list(session.scalars(query))
    progress = progress_of(session, [batch.id for batch in batches]) if batches else {}
    deliveries = deliveries_of_batches(session, batches)
    return [BatchSummary(batch=batch, progress=progress[batch.id], delivery=deliveries.get(batch.id))
            for batch in batches], total
