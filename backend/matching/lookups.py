"""Near-duplicate matching in the product: a process's index of every stored image's PDQ hash and every hash
imported from a shared list, kept in step with the database, and the lookups scoring and the API make with it.

The database is the source of truth (``images.pdq_hex``/``pdq_quality``, ``listed_hashes``, ``reviews``); the
index (backend.matching.index) only answers "which ids are within distance D". Labels are never held in the
index: a lookup reads the latest review of each candidate from the database, so a label, a relabel or an undo
counts from the next lookup on, in every process, with nothing to invalidate.

Each process (an API worker, a scoring worker) holds one index per settings value, loaded in full on first use
(the worker does it at start, see worker/app.py) and brought up to date before every lookup by reading the rows
added since (ids above the highest it has seen, and at most every LOOKBACK_EVERY_S a look-back for rows whose
transactions committed late).
Hashes written to old rows (``fakewatch hashes backfill``) arrive through the full reload every
``FAKEWATCH_MATCH_RELOAD_S``.

Ids in the index: an image's row id as it is, a listed hash's row id negated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from PIL import Image as PILImage
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from backend.matching.index import HashRow, Match, NearDuplicateIndex
from backend.matching.pdq import CopyRule, PdqHash, hash_image
from backend.matching.video import video_match
from backend.settings import Settings
from backend.storage.schema import Check, Image, ListedHash, Review, isoformat_z, utcnow
from core.check_evidence import NearCopyMatch
from core.enums import Label
from core.errors import NotFound

# Rows up to this many ids below the highest seen, and stored this recently, are read again on every sync: an id is
# assigned when a row is inserted but seen only once its transaction commits, so a slow transaction's row (a worker
# attaching a chunk's fetched images, up to about a minute) can appear behind a later one.
LOOKBACK_IDS = 1000
LOOKBACK_S = 300.0
# The look-back is read at most this often: it returns every recent row again (hundreds after a batch), which made
# it most of a cached re-check's lookup, while the rows it exists for committed seconds to a minute late anyway.
LOOKBACK_EVERY_S = 1.0


def hash_fields(image: PILImage.Image) -> tuple[str, int]:
    """What intake stores on an image row: its PDQ hash and quality, from the decoded, upright image."""
    pdq = hash_image(image)
    return pdq.hex, pdq.quality or 0


def stored_hash(image: Image) -> PdqHash | None:
    """An image row's hash, or None when it has none yet (stored before hashing, not backfilled)."""
    if image.pdq_hex is None:
        return None
    return PdqHash(image.pdq_hex, image.pdq_quality)


class MatchIndex:
    """One process's near-duplicate index over the database these settings name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index = NearDuplicateIndex(max_distance=settings.match_distance,
                                        min_quality=settings.match_min_quality)
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._marks = {"image": 0, "listed": 0}
        self._recent: dict[str, set[int]] = {"image": set(), "listed": set()}
        self._looked_back_at = 0.0

    def sync(self, session: Session) -> None:
        """Bring the index up to date with the database: in full when never loaded or past the reload interval,
        else the rows added since the last sync."""
        with self._lock:
            due = self._loaded_at is None or time.monotonic() - self._loaded_at >= self.settings.match_reload_s
            if due:
                self._reload(session)
            else:
                self._catch_up(session)

    def _reload(self, session: Session) -> None:
        self._marks = {"image": 0, "listed": 0}
        self._recent = {"image": set(), "listed": set()}
        self.index.rebuild(self._track("image", _image_rows(session, 0)))
        self.index.add_many(self._track("listed", _listed_rows(session, 0)))
        self._loaded_at = time.monotonic()

    def _catch_up(self, session: Session) -> None:
        look_back = time.monotonic() - self._looked_back_at >= LOOKBACK_EVERY_S
        if look_back:
            self._looked_back_at = time.monotonic()
        for kind, rows in (("image", _image_rows), ("listed", _listed_rows)):
            seen = self._recent[kind]
            fresh = [row for row in rows(session, self._marks[kind], look_back) if abs(row[0]) not in seen]
            self.index.add_many(self._track(kind, fresh))
            floor = self._marks[kind] - LOOKBACK_IDS
            self._recent[kind] = {row_id for row_id in self._recent[kind] if row_id > floor}

    def _track(self, kind: str, rows: Iterable[HashRow]) -> Iterator[HashRow]:
        """Pass rows through, noting the highest id and the ids within the look-back window."""
        for row in rows:
            row_id = abs(row[0])
            if row_id > self._marks[kind]:
                self._marks[kind] = row_id
            recent = self._recent[kind]
            recent.add(row_id)
            if len(recent) > 4 * LOOKBACK_IDS:  # a full load streams every id through: keep only the window
                floor = self._marks[kind] - LOOKBACK_IDS
                self._recent[kind] = {kept for kept in recent if kept > floor}
            yield row

    def lookup(self, session: Session, pdq: PdqHash) -> list[Match]:
        self.sync(session)
        return self.index.query(pdq)


@lru_cache(maxsize=4)
def match_index(settings: Settings) -> MatchIndex:
    """This process's index for these settings (empty until its first sync)."""
    return MatchIndex(settings)


def warm_index(session: Session, settings: Settings) -> int:
    """Load the index now (a worker's start), rather than at its first lookup; returns how many hashes it holds."""
    index = match_index(settings)
    index.sync(session)
    return len(index.index)


def _image_rows(session: Session, mark: int, look_back: bool = True) -> Iterator[HashRow]:
    """Rows above the mark, and (``look_back``) the recent ones just under it (LOOKBACK_IDS); every row when the
    mark is 0."""
    late = and_(Image.id > mark - LOOKBACK_IDS, Image.first_seen >= utcnow() - timedelta(seconds=LOOKBACK_S))
    query = (select(Image.id, Image.pdq_hex, Image.pdq_quality)
             .where(or_(Image.id > mark, late) if look_back else Image.id > mark, Image.pdq_hex.is_not(None))
             .order_by(Image.id))
    for image_id, pdq_hex, quality in session.execute(query.execution_options(yield_per=10_000)):
        if pdq_hex is not None:  # the query's filter; said again for the type
            yield image_id, pdq_hex, quality


def _listed_rows(session: Session, mark: int, look_back: bool = True) -> Iterator[HashRow]:
    late = and_(ListedHash.id > mark - LOOKBACK_IDS,
                ListedHash.created_at >= utcnow() - timedelta(seconds=LOOKBACK_S))
    query = (select(ListedHash.id, ListedHash.pdq_hex)
             .where(or_(ListedHash.id > mark, late) if look_back else ListedHash.id > mark).order_by(ListedHash.id))
    for listed_id, pdq_hex in session.execute(query):
        yield -listed_id, pdq_hex, None


# --- what a lookup finds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledCopy:
    """A near-copy that carries a label: a stored image with a moderator's review, or a listed hash."""

    distance: int
    label: Label
    by: str
    at: datetime
    sha256: str | None  # None for a listed hash: no image is stored for it
    pdq_hex: str
    note: str | None
    image_id: int | None


def labelled_copies(session: Session, settings: Settings, pdq: PdqHash | None,
                    exclude_image_id: int | None = None) -> list[LabelledCopy]:
    """The labelled near-copies of a hash, nearest first (none for a missing or low-quality hash). A stored
    image's own label is not among them: a review of the same bytes is rule 1, not a match."""
    if pdq is None:
        return []
    found = [m for m in match_index(settings).lookup(session, pdq) if m.id != exclude_image_id]
    return labelled_among(session, found)


def labelled_among(session: Session, found: Sequence[Match]) -> list[LabelledCopy]:
    """The labelled ones among index matches, with each image's latest label (one query each kind)."""
    distance = {m.id: m.distance for m in found}
    image_ids = [m.id for m in found if m.id > 0]
    listed_ids = [-m.id for m in found if m.id < 0]
    copies: list[LabelledCopy] = []
    if image_ids:
        latest: dict[int, tuple[Review, Image]] = {}
        rows = session.execute(
            select(Review, Image).join(Image, Image.id == Review.image_id).where(Review.image_id.in_(image_ids))
            .order_by(Review.created_at.desc(), Review.id.desc()))
        for review, image in rows:
            latest.setdefault(image.id, (review, image))
        copies += [LabelledCopy(distance[image.id], Label(review.label), review.reviewer, review.created_at,
                                image.sha256, image.pdq_hex or "", review.note, image.id)
                   for review, image in latest.values()]
    if listed_ids:
        copies += [LabelledCopy(distance[-listed.id], Label(listed.label), listed.added_by, listed.created_at, None,
                                listed.pdq_hex, listed.note or None, None)
                   for listed in session.scalars(select(ListedHash).where(ListedHash.id.in_(listed_ids)))]
    return sorted(copies, key=lambda copy: (copy.distance, copy.sha256 or "", copy.pdq_hex))


def match_evidence(copies: Sequence[LabelledCopy]) -> NearCopyMatch | None:
    """A check's ``match`` (docs/matching.md): the nearest labelled copy, plus every label seen (rule 3 weighs them
    all)."""
    if not copies:
        return None
    nearest = copies[0]
    return NearCopyMatch(sha256=nearest.sha256, distance=nearest.distance, label=nearest.label, by=nearest.by,
                         at=isoformat_z(nearest.at), labels=tuple(sorted({copy.label for copy in copies})),
                         pdq_hex=nearest.pdq_hex, count=len(copies))


def match_for_image(session: Session, settings: Settings, image: Image | None) -> NearCopyMatch | None:
    """What scoring records as a check's ``match``: its image's labelled near-copies, or None (a video's by vPDQ:
    backend/matching/video.py)."""
    if image is None:
        return None
    if image.media == "video":
        return video_match(session, image)
    return match_evidence(labelled_copies(session, settings, stored_hash(image), exclude_image_id=image.id))


@dataclass(frozen=True)
class StoredCopy:
    image: Image
    distance: int


def stored_copies(session: Session, settings: Settings, image: Image) -> list[StoredCopy]:
    """Every other stored image within the match distance of this one, nearest first (the Image page's list and
    ``GET /api/v1/images/<sha256>/matches``)."""
    pdq = stored_hash(image)
    if pdq is None:
        return []
    found = [m for m in match_index(settings).lookup(session, pdq) if m.id > 0 and m.id != image.id]
    rows = {row.id: row for row in session.scalars(select(Image).where(Image.id.in_([m.id for m in found])))}
    return [StoredCopy(rows[m.id], m.distance) for m in found if m.id in rows]


@dataclass(frozen=True)
class CopySeen:
    """A stored near-copy of an image as the Image page and the matches endpoint list it: how far, its latest
    label, and where it was seen (its checks' sources and pages)."""

    image: Image
    distance: int
    label: Label | None
    checks: int
    sources: tuple[str, ...]
    page_urls: tuple[str, ...]


# The pages listed per copy: enough to see where it spread, not a crawl log.
MAX_PAGES_LISTED = 10


def copies_seen(session: Session, settings: Settings, image: Image) -> list[CopySeen]:
    """Every stored near-copy of this image, nearest first, with where each was seen."""
    copies = stored_copies(session, settings, image)
    ids = [copy.image.id for copy in copies]
    if not ids:
        return []
    labels: dict[int, Label] = {}
    for review in session.scalars(select(Review).where(Review.image_id.in_(ids))
                                  .order_by(Review.created_at.desc(), Review.id.desc())):
        labels.setdefault(review.image_id, Label(review.label))
    seen: dict[int, tuple[int, dict[str, None], dict[str, None]]] = {i: (0, {}, {}) for i in ids}
    for image_id, source, page_url, source_url in session.execute(
            select(Check.image_id, Check.source, Check.page_url, Check.source_url)
            .where(Check.image_id.in_(ids)).order_by(Check.created_at)):
        if image_id is None:
            continue
        count, sources, pages = seen[image_id]
        sources[str(source)] = None
        where = page_url or source_url
        if where and len(pages) < MAX_PAGES_LISTED:
            pages[where] = None
        seen[image_id] = (count + 1, sources, pages)
    return [CopySeen(copy.image, copy.distance, labels.get(copy.image.id), seen[copy.image.id][0],
                     tuple(seen[copy.image.id][1]), tuple(seen[copy.image.id][2])) for copy in copies]


def copy_rule(settings: Settings) -> CopyRule:
    """The settings' near-copy rule, for the review queue's cards and the resolving of copies."""
    return CopyRule(distance=settings.match_distance, min_quality=settings.match_min_quality)


@dataclass(frozen=True)
class ImageMatches:
    """``GET /api/v1/images/<sha256>/matches``: an image's hash, its stored near-copies and the listed hashes near
    it."""

    image: Image
    max_distance: int
    matchable: bool
    copies: list[CopySeen]
    listed: list[LabelledCopy]

    @property
    def sha256(self) -> str:
        return self.image.sha256

    @property
    def pdq_hex(self) -> str | None:
        return self.image.pdq_hex

    @property
    def pdq_quality(self) -> int | None:
        return self.image.pdq_quality


def image_matches(session: Session, settings: Settings, sha256: str) -> ImageMatches:
    image = session.scalar(select(Image).where(Image.sha256 == sha256))
    if image is None:
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    pdq = stored_hash(image)
    listed = [copy for copy in labelled_copies(session, settings, pdq, exclude_image_id=image.id)
              if copy.image_id is None]
    return ImageMatches(image=image, max_distance=settings.match_distance,
                        matchable=pdq is not None and pdq.is_matchable(settings.match_min_quality),
                        copies=copies_seen(session, settings, image), listed=listed)
