"""What fakewatch shares and takes in as hash lists (backend.matching.lists reads and writes the CSV), and the one-off
hashing of images stored before intake computed PDQ hashes.

Export: the latest label of every labelled image with a matchable hash, then every imported hash (a hash already
written is not written again). Import: each listed hash is stored in ``listed_hashes`` and matches like a labelled
image from the next lookup on (backend.matching.lookups); a hash imported again takes the new label and note.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.matching.lists import HashList, HashListEntry
from backend.matching.lookups import hash_fields
from backend.settings import Settings
from backend.storage.schema import Image, ListedHash, Review
from backend.storage.store import image_store, read_stored
from core.decoding import decode_image
from core.enums import Label
from core.errors import FakewatchError

BACKFILL_COMMIT_EVERY = 200


def export_entries(session: Session, settings: Settings, *, with_notes: bool = False) -> Iterator[HashListEntry]:
    """The hash list of what this installation decided: labelled images first, then imported hashes. Moderators'
    notes on images can name people or cases, so they are left out unless asked for."""
    written: set[str] = set()
    latest: dict[int, Review] = {}
    for review in session.scalars(select(Review).order_by(Review.created_at.desc(), Review.id.desc())):
        latest.setdefault(review.image_id, review)
    rows = session.execute(select(Image.id, Image.pdq_hex).where(
        Image.id.in_(list(latest)), Image.pdq_hex.is_not(None), Image.pdq_quality >= settings.match_min_quality)
        .order_by(Image.id)).all() if latest else []
    for image_id, pdq_hex in rows:
        if pdq_hex is not None and pdq_hex not in written:
            written.add(pdq_hex)
            review = latest[image_id]
            yield HashListEntry(pdq_hex, Label(review.label).value, (review.note or "") if with_notes else "")
    for listed in session.scalars(select(ListedHash).order_by(ListedHash.id)):
        if listed.pdq_hex not in written:
            written.add(listed.pdq_hex)
            yield HashListEntry(listed.pdq_hex, Label(listed.label).value, listed.note)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


def import_entries(session: Session, parsed: HashList, added_by: str) -> ImportReport:
    """Store a parsed hash list's entries as listed hashes; the caller commits."""
    report = ImportReport()
    hexes = [entry.pdq_hex for entry in parsed.entries]
    known = {row.pdq_hex: row for row in session.scalars(select(ListedHash).where(ListedHash.pdq_hex.in_(hexes)))} \
        if hexes else {}
    for entry in parsed.entries:
        row = known.get(entry.pdq_hex)
        if row is None:
            session.add(ListedHash(pdq_hex=entry.pdq_hex, label=Label(entry.label), note=entry.note,
                                   added_by=added_by))
            report.added += 1
        elif (Label(row.label).value, row.note) == (entry.label, entry.note):
            report.unchanged += 1
        else:
            row.label, row.note, row.added_by = Label(entry.label), entry.note, added_by
            report.updated += 1
    session.flush()
    return report


@dataclass
class BackfillReport:
    hashed: int = 0
    unreadable: list[str] = field(default_factory=list)


def backfill_hashes(session: Session, settings: Settings, limit: int | None = None) -> BackfillReport:
    """Hash every stored image that has no PDQ hash yet (stored before intake hashed them), committing as it goes
    so an interrupted run keeps what it did. Images whose file is missing or unreadable are reported and left."""
    report = BackfillReport()
    after = 0
    while limit is None or report.hashed < limit:
        batch = list(session.scalars(select(Image).where(Image.pdq_hex.is_(None), Image.id > after)
                                     .order_by(Image.id).limit(BACKFILL_COMMIT_EVERY)))
        if not batch:
            break
        for image in batch:
            after = image.id
            try:
                decoded = decode_image(read_stored(image.storage_key, image_store(settings)), settings.image_limits)
            except (FakewatchError, OSError) as error:
                report.unreadable.append(f"{image.sha256}: {getattr(error, 'message', error)}")
                continue
            image.pdq_hex, image.pdq_quality = hash_fields(decoded)
            report.hashed += 1
            if limit is not None and report.hashed >= limit:
                break
        session.commit()
    return report
