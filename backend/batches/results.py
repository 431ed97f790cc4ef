"""A batch's results: one row per URL in input order, streamed as CSV (with a header) or JSON lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.checks.verdicts import (
    flagged_when_read,
    latest_review_label,
    provenance_summary,
    stored_decision_when_read,
)
from backend.storage.schema import Check, Image, ModelVersion, isoformat_z
from core.enums import CheckStatus, Label

RESULT_COLUMNS = ("url", "status", "verdict", "score", "confidence", "flagged", "cached", "model_version",
                  "sha256", "error_code", "error_message", "check_id", "finished_at",
                  # What decided the verdict, the file's evidence in one line, and the labelled near-copy that did
                  # (or was weighed): a check's provenance and match (docs/architecture.md, "JSON shapes").
                  "verdict_source", "provenance", "match_sha256", "match_pdq_hex", "match_distance", "match_label",
                  # A moderator's latest label of the bytes: the verdict when there is one (rule 1).
                  "review",
                  # Videos (docs/video.md): an item row, then one "frame" row per sampled frame with its time, score
                  # and the model's verdict on it alone.
                  "row", "media", "duration_s", "frame_time_s", "frame_score", "frame_verdict")
ResultFilter = Literal["all", "flagged", "failed"]
ResultFormat = Literal["csv", "jsonl"]
RESULT_FILTERS: tuple[ResultFilter, ...] = ("all", "flagged", "failed")
RESULT_FORMATS: tuple[ResultFormat, ...] = ("csv", "jsonl")


def iter_results(session: Session, batch_id: str, only: ResultFilter = "all", chunk: int = 500) -> Iterator[dict[str, Any]]:
    """One row per URL in input order, read in chunks so a 10,000-item batch never sits in memory at once. A
    moderator's latest label of an item's bytes is its verdict (rule 1), as the API shows it when read."""
    review = latest_review_label()
    query = (
        select(Check.id, Check.source_url, Check.status, Check.verdict, Check.score, Check.flagged, Check.cached,
               Check.error_code, Check.error_message, Check.finished_at, Check.verdict_source, Image.sha256,
               Image.provenance, ModelVersion.name, Check.match, review.label("review"), Image.media,
               Image.duration_s, Check.frames)
        .outerjoin(Image, Image.id == Check.image_id)
        .outerjoin(ModelVersion, ModelVersion.id == Check.model_version_id)
        .where(Check.batch_id == batch_id)
        .order_by(Check.id)
    )
    if only == "flagged":
        query = query.where(flagged_when_read(review))
    elif only == "failed":
        query = query.where(Check.status == CheckStatus.FAILED)
    for row in session.execute(query.execution_options(yield_per=chunk)):
        label = Label(row.review) if row.review else None
        # The model's confidence only when the model decided; other evidence has none (docs/architecture.md,
        # "Verdict rules").
        decision = stored_decision_when_read(row.score, row.verdict, row.verdict_source, label)
        item = {
            "url": row.source_url, "status": row.status.value,
            "verdict": decision.verdict.value if decision.verdict else None, "score": row.score,
            "confidence": decision.confidence,
            "flagged": decision.flagged if label is not None else bool(row.flagged), "cached": bool(row.cached),
            "model_version": row.name, "sha256": row.sha256, "error_code": row.error_code,
            "error_message": row.error_message, "check_id": row.id, "finished_at": isoformat_z(row.finished_at),
            "verdict_source": decision.source.value if decision.source else None,
            # The evidence in one line ("AI: Content Credentials, OpenAI"); empty when the file carries none.
            "provenance": provenance_summary(row.provenance) if row.sha256 else None,
            **_match_columns(row.match),
            "review": label.value if label else None,
            "row": "item", "media": row.media, "duration_s": row.duration_s,
        }
        yield item
        yield from _frame_rows(item, row.frames)


def _frame_rows(item: dict[str, Any], frames: list[Any] | None) -> Iterator[dict[str, Any]]:
    """A video item's sampled frames, one row each, under the item's url, check and sha256."""
    for frame in frames or ():
        yield {"url": item["url"], "status": item["status"], "check_id": item["check_id"], "sha256": item["sha256"],
               "model_version": item["model_version"], "row": "frame", "media": item["media"],
               "frame_time_s": frame["time_s"], "frame_score": frame["score"], "frame_verdict": frame["verdict"]}


def _match_columns(match: dict[str, Any] | None) -> dict[str, Any]:
    match = match or {}
    return {"match_sha256": match.get("sha256"), "match_pdq_hex": match.get("pdq_hex"),
            "match_distance": match.get("distance"), "match_label": match.get("label")}


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
