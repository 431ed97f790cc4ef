"""Batches: a list of image URLs submitted at once, each URL becoming a check linked to the batch.

Acceptance stays fast whatever the size: the URLs are validated for syntax only (whether an address may be
fetched is decided when it is fetched, since DNS can change), their check rows are inserted in one bulk
statement, and the work goes to the broker in chunks of ids, never one message per URL.

A batch item's check id is the batch's random item prefix followed by the item's position in hex, so ordering a
batch's checks by id gives the input order without another column.

A batch's status is derived from its checks: queued until one of them starts, running until all are final,
then done (written back with its finish time the first time it is seen), or cancelled when a user cancelled it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, case, func, insert, select, update
from sqlalchemy.orm import Session

from backend.errors import FakewatchError, NotFound
from backend.fetch import validate_url
from backend.policy import verdict_confidence
from backend.schema import Batch, Check, Image, ModelVersion, isoformat_z, new_id, utcnow
from backend.settings import Settings, get_settings

# Check ids sent per broker message: one message is one micro-batch a worker fetches and scores together.
MAX_NAME_CHARS = 200
# Rates are measured over the last RATE_WINDOW_S seconds, so the time left follows the current pace.
RATE_WINDOW_S = 30.0
# The invalid lines reported back are capped so a file of garbage cannot bloat the batch row.
MAX_INVALID_REPORTED = 1000
RESULT_COLUMNS = ("url", "status", "verdict", "score", "confidence", "flagged", "cached", "model_version",
                  "sha256", "error_code", "error_message", "check_id", "finished_at")
CHECK_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ResultFilter = Literal["all", "flagged", "failed"]
ResultFormat = Literal["csv", "jsonl"]


@dataclass
class Entry:
    """One line of the submitted list: its 1-based line number and its raw value."""

    line: int
    value: str


@dataclass
class ParsedList:
    urls: list[str] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class CreatedBatch:
    batch: Batch
    check_ids: list[str]
    duplicates: int


# --- reading the submitted list -------------------------------------------------------------------------------


def entries_from_json(body: Any) -> tuple[list[Entry], str]:
    """``{"urls": [...], "name": ...}``: each URL's line is its 1-based position in the list."""
    if not isinstance(body, dict) or not isinstance(body.get("urls"), list):
        raise FakewatchError("invalid_request", 'Send JSON like {"urls": ["https://example.com/a.jpg"], "name": "crawl"}.')
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise FakewatchError("invalid_request", "name must be text.")
    return [Entry(index, value if isinstance(value, str) else json.dumps(value))
            for index, value in enumerate(body["urls"], start=1)], name or ""


def entries_from_text(text: str) -> list[Entry]:
    """One URL per line; blank lines and ``#`` comments are skipped but still counted for line numbers."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if value and not value.startswith("#"):
            entries.append(Entry(number, value))
    return entries


def entries_from_csv(text: str) -> list[Entry]:
    """The ``url`` column of a CSV with a header row; line numbers are the file's (the header is line 1)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise FakewatchError("invalid_request", "The CSV file is empty or unreadable.") from error
    columns = [column.strip().lower() for column in header]
    if "url" not in columns:
        raise FakewatchError("invalid_request",
                             f"The CSV file needs a `url` column; its header has {', '.join(header) or 'nothing'}.")
    position = columns.index("url")
    entries = []
    try:
        for row in reader:
            value = row[position].strip() if position < len(row) else ""
            if value:
                entries.append(Entry(reader.line_num, value))
    except csv.Error as error:
        raise FakewatchError("invalid_request", f"The CSV file is malformed near line {reader.line_num}: {error}.") from error
    return entries


def entries_from_file(data: bytes, filename: str, mimetype: str | None = None) -> list[Entry]:
    """An uploaded list: a CSV with a `url` column (a ``.csv`` name or a text/csv type), else one URL per line."""
    text = decode_text(data)
    is_csv = filename.lower().endswith(".csv") or mimetype == "text/csv"
    return entries_from_csv(text) if is_csv else entries_from_text(text)


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FakewatchError("invalid_request", f"The list is not UTF-8 text (byte {error.start}).") from error


def validate_entries(entries: Sequence[Entry], settings: Settings | None = None) -> ParsedList:
    """Keep syntactically valid http(s) URLs in order, fold duplicates, and report the rest by line.

    The size limit counts distinct valid URLs (the items); the request's byte cap bounds everything else."""
    limit = max_urls(settings)
    parsed = ParsedList()
    seen: set[str] = set()
    for entry in entries:
        try:
            url = validate_url(entry.value)
        except FakewatchError as error:
            if len(parsed.invalid) < MAX_INVALID_REPORTED:
                parsed.invalid.append({"line": entry.line, "value": entry.value[:300], "reason": error.message})
            continue
        if url in seen:
            parsed.duplicates += 1
            continue
        seen.add(url)
        parsed.urls.append(url)
    if len(parsed.urls) > limit:
        raise FakewatchError("too_large", f"The list has {len(parsed.urls)} distinct URLs; a batch takes at most "
                                          f"{limit}. Split it into several batches.", 413)
    if not parsed.urls:
        raise FakewatchError("invalid_request", "The list holds no valid http(s) URL. " + _describe_invalid(parsed.invalid))
    return parsed


def max_urls(settings: Settings | None = None) -> int:
    return (settings or get_settings()).batch_max_urls


def _describe_invalid(invalid: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"line {item['line']}: {item['reason']}" for item in invalid[:3])
    more = f" (and {len(invalid) - 3} more)" if len(invalid) > 3 else ""
    return shown + more


# --- creating, cancelling --------------------------------------------------------------------------------------


def create_batch(session: Session, parsed: ParsedList, *, name: str = "", api_key_id: int | None = None) -> CreatedBatch:
    """Insert the batch and one queued check per URL in bulk (no commit: :func:`submit_list` commits and sends)."""
    if len(name) > MAX_NAME_CHARS:
        raise FakewatchError("invalid_request", f"name must be at most {MAX_NAME_CHARS} characters.")
    now = utcnow()
    batch = Batch(id=new_id(), name=name, status="queued", total=len(parsed.urls), invalid=parsed.invalid,
                  api_key_id=api_key_id, created_at=now)
    session.add(batch)
    session.flush()
    prefix = new_id()[:24]
    ids = [f"{prefix}{position:08x}" for position in range(len(parsed.urls))]
    rows = [{"id": check_id, "source": "batch", "source_url": url, "batch_id": batch.id, "status": "queued",
             "attempts": 0, "flagged": False, "cached": False, "api_key_id": api_key_id, "created_at": now,
             "queued_at": now}
            for check_id, url in zip(ids, parsed.urls, strict=True)]
    # A Core insert of the table: one executemany, without the ORM's per-row bookkeeping.
    session.execute(insert(cast(Table, Check.__table__)), rows)
    return CreatedBatch(batch=batch, check_ids=ids, duplicates=parsed.duplicates)


def submit_list(session: Session, entries: Sequence[Entry], *, name: str = "", api_key_id: int | None = None
                ) -> CreatedBatch:
    """Validate the lines, insert the batch, commit, then send its checks to the workers: after the commit, so a
    worker never sees an item that is not in the database yet."""
    from backend.queue import enqueue_scoring

    created = create_batch(session, validate_entries(entries), name=name, api_key_id=api_key_id)
    session.commit()
    enqueue_scoring(created.check_ids)
    return created


def get_batch(session: Session, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"There is no batch {batch_id!r}.")
    return batch


def cancel_batch(session: Session, batch_id: str) -> Batch:
    """Cancel the items not started yet; running ones finish. A finished batch is left as it is."""
    batch = get_batch(session, batch_id)
    if batch.status in ("done", "cancelled"):
        return batch
    now = utcnow()
    session.execute(
        update(Check).where(Check.batch_id == batch_id, Check.status == "queued")
        .values(status="cancelled", finished_at=now, error_code="cancelled",
                error_message="The batch was cancelled before this item was checked.")
        .execution_options(synchronize_session=False)
    )
    batch.status = "cancelled"
    batch.finished_at = now
    session.flush()
    return batch


# --- progress ----------------------------------------------------------------------------------------------------


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
    def final(self) -> int:
        return self.done + self.failed + self.cancelled


def progress_of(session: Session, batch_ids: Sequence[str]) -> dict[str, Progress]:
    """Counts per status (and flagged, and recently finished) for several batches in one query."""
    window_start = utcnow() - timedelta(seconds=RATE_WINDOW_S)
    rows = session.execute(
        select(Check.batch_id, Check.status, func.count(),
               func.sum(case((Check.flagged.is_(True), 1), else_=0)),
               func.sum(case((Check.finished_at >= window_start, 1), else_=0)),
               func.max(Check.finished_at))
        .where(Check.batch_id.in_(list(batch_ids)))
        .group_by(Check.batch_id, Check.status)
    )
    progress = {batch_id: Progress() for batch_id in batch_ids}
    for batch_id, status, count, flagged, recent, last in rows:
        entry = progress[batch_id]
        if status in CHECK_STATUSES:
            setattr(entry, status, int(count))
        entry.flagged += int(flagged or 0)
        if status in ("done", "failed"):
            entry.recent += int(recent or 0)
        if last is not None and status != "cancelled":
            entry.last_finished = max(filter(None, (entry.last_finished, last)))
    return progress


def batch_to_dict(session: Session, batch: Batch, progress: Progress | None = None) -> dict[str, Any]:
    """The batch object of DESIGN.md; marks the batch done the first time all its items are final."""
    progress = progress or progress_of(session, [batch.id])[batch.id]
    _settle_status(batch, progress)
    rate = _rate_per_s(batch, progress)
    remaining = progress.queued + progress.running if batch.status != "cancelled" else progress.running
    return {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "total": batch.total,
        "queued": progress.queued,
        "running": progress.running,
        "done": progress.done,
        "failed": progress.failed,
        "cancelled": progress.cancelled,
        "flagged": progress.flagged,
        "rate_per_s": round(rate, 3) if rate is not None else None,
        "eta_s": round(remaining / rate, 1) if rate and remaining else (0.0 if not remaining else None),
        "invalid": batch.invalid,
        "created_at": isoformat_z(batch.created_at),
        "finished_at": isoformat_z(batch.finished_at),
    }


def _settle_status(batch: Batch, progress: Progress) -> None:
    if batch.status in ("done", "cancelled"):
        return
    if progress.queued == 0 and progress.running == 0:
        batch.status = "done"
        batch.finished_at = progress.last_finished or utcnow()
    elif progress.running or progress.final:
        batch.status = "running"


def _rate_per_s(batch: Batch, progress: Progress) -> float | None:
    """Items finished per second: over the last window while running, over the whole batch once finished."""
    processed = progress.done + progress.failed
    if batch.status in ("done", "cancelled") or not (progress.queued or progress.running):
        end = progress.last_finished or batch.finished_at
        if not processed or end is None:
            return None
        elapsed = (end - batch.created_at).total_seconds()
        return processed / elapsed if elapsed > 0 else None
    elapsed = min(RATE_WINDOW_S, (utcnow() - batch.created_at).total_seconds())
    return progress.recent / elapsed if elapsed > 0 and progress.recent else None


def list_batches(session: Session, page: int = 1, per_page: int = 20) -> tuple[list[dict[str, Any]], int]:
    """One page of batches, newest first, with the total number of batches."""
    total = session.scalar(select(func.count()).select_from(Batch)) or 0
    batches = list(session.scalars(
        select(Batch).order_by(Batch.created_at.desc(), Batch.id).offset((page - 1) * per_page).limit(per_page)))
    progress = progress_of(session, [batch.id for batch in batches]) if batches else {}
    return [batch_to_dict(session, batch, progress[batch.id]) for batch in batches], total


# --- results ---------------------------------------------------------------------------------------------------


def iter_results(session: Session, batch_id: str, only: ResultFilter = "all", chunk: int = 500) -> Iterator[dict[str, Any]]:
    """One row per URL in input order, read in chunks so a 10,000-item batch never sits in memory at once."""
    query = (
        select(Check.id, Check.source_url, Check.status, Check.verdict, Check.score, Check.flagged, Check.cached,
               Check.error_code, Check.error_message, Check.finished_at, Image.sha256, ModelVersion.name)
        .outerjoin(Image, Image.id == Check.image_id)
        .outerjoin(ModelVersion, ModelVersion.id == Check.model_version_id)
        .where(Check.batch_id == batch_id)
        .order_by(Check.id)
    )
    if only == "flagged":
        query = query.where(Check.flagged.is_(True))
    elif only == "failed":
        query = query.where(Check.status == "failed")
    for row in session.execute(query.execution_options(yield_per=chunk)):
        yield {
            "url": row.source_url, "status": row.status, "verdict": row.verdict, "score": row.score,
            "confidence": verdict_confidence(row.score, row.verdict),
            "flagged": bool(row.flagged), "cached": bool(row.cached), "model_version": row.name,
            "sha256": row.sha256, "error_code": row.error_code, "error_message": row.error_message,
            "check_id": row.id, "finished_at": isoformat_z(row.finished_at),
        }


def format_results(rows: Iterable[dict[str, Any]], fmt: ResultFormat) -> Iterator[str]:
    """CSV (with a header) or JSON lines, one piece per row, for streaming."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
