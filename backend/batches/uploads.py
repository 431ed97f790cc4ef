"""Upload batches: many image or video files in one request, each becoming a check of one batch, as a list of URLs
does. What a moderator with a folder of files needs, and what makes intake cheap per file: one request (one
multipart parse, one authentication), one database transaction for the lot, and the items handed to the broker in
one send, a message per ``score_batch_size`` ids, instead of a message and a commit per file.

Each file goes through the same intake as a single upload (``backend.checks.service.stored_image``: the caps,
the format allow-list, one decode, the perceptual hash, provenance); a file it refuses is reported in the batch's
``invalid`` by its position and name and does not fail the others, as an invalid line of a URL list does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backend.batches.lifecycle import CreatedBatch, item_ids, new_batch, settle_batches
from backend.batches.lists import MAX_INVALID_REPORTED
from backend.checks.handoff import send_checks
from backend.checks.metrics import CHECKS_ACCEPTED
from backend.checks.service import finish_cached, stored_image
from backend.settings import Settings
from backend.storage.schema import Check, Image
from core.enums import Source
from core.errors import FakewatchError

MAX_FILENAME_CHARS = 300


@dataclass(frozen=True)
class UploadedFile:
    """One file of an upload batch: its name as the client sent it (to name it in a refusal) and a way to read its
    bytes, read one file at a time so a request of many large files never sits in memory at once."""

    filename: str
    read: Callable[[], bytes]


@dataclass
class Accepted:
    images: list[Image]
    invalid: list[dict[str, Any]]
    duplicates: int


def submit_files(session: Session, files: Sequence[UploadedFile], settings: Settings, *, name: str = "",
                 api_key_id: int | None = None, callback_url: str | None = None,
                 before_commit: Callable[[CreatedBatch], None] | None = None) -> CreatedBatch:
    """Check and store each file, insert the batch with one check per distinct file (done at once where the active
    model already scored those bytes), commit once, then send the rest to the workers in one send. A batch all of
    whose items were cached is done before this returns. Refuses the request when it holds no file, more than
    ``batch_max_files``, or no file intake accepts."""
    if not files:
        raise FakewatchError("invalid_request", "Send the images as multipart file fields named `files`.")
    if len(files) > settings.batch_max_files:
        raise FakewatchError("too_large", f"The request has {len(files)} files; an upload batch takes at most "
                                          f"{settings.batch_max_files}. Split it into several batches.", 413)
    accepted = _accept(session, files, settings)
    batch = new_batch(session, len(accepted.images), accepted.invalid, name=name, api_key_id=api_key_id,
                      callback_url=callback_url)
    checks = [Check(id=check_id, source=Source.BATCH, batch_id=batch.id, image_id=image.id, image=image,
                    api_key_id=api_key_id, created_at=batch.created_at, queued_at=batch.created_at)
              for check_id, image in zip(item_ids(len(accepted.images)), accepted.images, strict=True)]
    session.add_all(checks)
    to_score = finish_cached(session, settings, checks)
    session.flush()
    created = CreatedBatch(batch=batch, check_ids=[check.id for check in checks], duplicates=accepted.duplicates)
    if before_commit is not None:
        before_commit(created)
    session.commit()
    CHECKS_ACCEPTED.labels(Source.BATCH.value).inc(len(checks))
    if len(to_score) < len(checks) and settle_batches(session, [batch.id]):
        session.commit()  # every item was cached: the batch is done now
        session.refresh(batch)
    send_checks(session, settings, [check.id for check in to_score])
    return created


def _accept(session: Session, files: Sequence[UploadedFile], settings: Settings) -> Accepted:
    """The distinct images of these files, in order; the files intake refused, by position and name."""
    accepted = Accepted(images=[], invalid=[], duplicates=0)
    seen: set[int] = set()
    refusals: list[FakewatchError] = []
    for position, upload in enumerate(files, start=1):
        try:
            image, _ = stored_image(session, upload.read(), settings)
        except FakewatchError as refusal:
            refusals.append(refusal)
            if len(accepted.invalid) < MAX_INVALID_REPORTED:
                accepted.invalid.append({"line": position, "value": upload.filename[:MAX_FILENAME_CHARS],
                                         "reason": refusal.message, "code": refusal.code})
            continue
        if image.id in seen:  # the same bytes twice: one item, as a repeated URL is
            accepted.duplicates += 1
            continue
        seen.add(image.id)
        accepted.images.append(image)
    if not accepted.images:
        first = refusals[0]
        reasons = "; ".join(f"file {item['line']} ({item['value']}): {item['reason']}" for item in accepted.invalid[:3])
        raise FakewatchError(first.code, f"No file was accepted. {reasons}", first.status)
    return accepted
