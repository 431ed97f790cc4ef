"""Checks: submitting an image or URL, reading a check back, and the state changes the workers make.

Every entry point (API, CLI, console, Celery tasks) goes through these functions; the database row is the
source of truth for a check's state, and a check's status only moves forward:
queued -> running -> done | failed, or queued -> cancelled. A batch's status follows its items': it becomes
running when a worker claims one of them and done when the last one ends (backend/batches/lifecycle.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from PIL.Image import Image as PILImage
from sqlalchemy import ColumnElement, Select, and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.batches.lifecycle import mark_batches_running, settle_batches
from backend.checks.metrics import CHECKS_ACCEPTED, note_finished
from backend.checks.verdicts import decide_at_scoring
from backend.checks.wakeups import Bell
from backend.fetching.fetcher import check_address, validate_url
from backend.identity.access import Actor, owner_key_id, visible_or_not_found
from backend.matching.lookups import hash_fields, match_for_image
from backend.provenance.intake import read_image_provenance
from backend.settings import Settings
from backend.storage.db import get_or_not_found
from backend.storage.schema import Check, Image, ModelVersion, utcnow
from backend.storage.store import image_store, put_image
from backend.training.versions import require_active_version
from core.check_evidence import NearCopyMatch, Region, regions_from_json, regions_to_json
from core.decoding import decode_image
from core.enums import CheckStatus, Source
from core.media import MediaInfo, decode_media
from core.video import VideoInfo


def store_image(session: Session, data: bytes, settings: Settings, info: MediaInfo | None = None,
                pixels: PILImage | None = None) -> Image:
    """Validate untrusted bytes, store them content-addressed, and return their (possibly existing) row.
    See :func:`stored_image`."""
    return stored_image(session, data, settings, info, pixels)[0]


def stored_image(session: Session, data: bytes, settings: Settings, info: MediaInfo | None = None,
                 pixels: PILImage | None = None) -> tuple[Image, bool]:
    """The image row of these bytes (validated and stored when new), and whether this call inserted it.

    ``info`` and ``pixels``: what ``inspect_media`` / ``decode_checked`` found of these bytes when the caller already
    has it (the fetcher does). New still bytes are decoded at most once here: validation, size and the perceptual
    hash all come from that one decode; provenance reads the original bytes' metadata, not their pixels. A clip or
    animation is stored the same way, as media "video"; its frames are decoded by the worker."""
    # Bytes with a known SHA-256 passed every intake check when first stored: skip decoding them again.
    known = session.scalar(select(Image).where(Image.sha256 == hashlib.sha256(data).hexdigest()))
    if known is not None:
        if known.deleted_at is not None:
            # Deleted earlier (backend/delivery/retention.py) and submitted again: a new submission, stored again.
            put_image(data, known.sha256, image_store(settings))
            known.deleted_at = None
        if known.provenance is None:  # stored before provenance was read (or purged): read it now, once
            known.provenance = read_image_provenance(data, settings)
        return known, False
    if info is None:
        info, pixels = decode_media(data, settings.image_limits, settings.video_limits)
    key = put_image(data, info.sha256, image_store(settings))
    image = Image(sha256=info.sha256, byte_size=info.byte_size, format=info.format,
                  width=info.width, height=info.height, storage_key=key)
    # From the original bytes, before anything decodes or re-encodes them (backend/provenance/intake.py).
    image.provenance = read_image_provenance(data, settings, info.tags if isinstance(info, VideoInfo) else None)
    if isinstance(info, VideoInfo):  # its frames' PDQ hashes come with its first scoring (worker/video.py)
        image.media, image.duration_s = "video", info.duration_s
    else:
        # Near-duplicate matching (backend/matching/lookups.py): the PDQ hash of the decoded image, stored with its row.
        image.pdq_hex, image.pdq_quality = hash_fields(pixels if pixels is not None
                                                       else decode_image(data, settings.image_limits))
    try:
        with session.begin_nested():
            session.add(image)
    except IntegrityError:
        # Another request stored the same bytes a moment ago.
        return session.scalars(select(Image).where(Image.sha256 == info.sha256)).one(), False
    return image, True


@dataclass(frozen=True)
class CachedScore:
    """An earlier score of the same bytes by the same model version, with the regions it was pooled from."""

    score: float
    regions: tuple[Region, ...] | None
    frames: list[Any] | None = None


@cache
def _cached_scores_query() -> Select[int | None, float | None, Any, Any]:
    """Built once, the images and the version bound at each call: every upload, cached re-checks included, runs it."""
    return (select(Check.image_id, Check.score, Check.regions, Check.frames)
            .where(Check.image_id.in_(bindparam("image_ids", expanding=True)),
                   Check.model_version_id == bindparam("model_version_id"),
                   Check.status == CheckStatus.DONE, Check.score.is_not(None), Check.cached.is_(False))
            .order_by(Check.finished_at.desc()))


def find_cached_scores(session: Session, image_ids: Sequence[int], model_version_id: int) -> dict[int, CachedScore]:
    """Earlier scores of the same bytes by the same model version, by image id (one query for all of them).

    Only scorings by the model count (``cached`` false): each cached answer repeats one of them. The index
    ``ix_checks_image_model_cached`` (migration 0013) leads to those rows alone, so an image re-checked thousands of
    times costs a re-check no more than one checked once."""
    rows = session.execute(_cached_scores_query(),
                           {"image_ids": sorted(set(image_ids)), "model_version_id": model_version_id})
    # Newest first, so the oldest score of each image is written last and wins (the one first reported).
    return {image_id: CachedScore(score, regions_from_json(regions), frames) for image_id, score, regions, frames in rows
            if image_id is not None and score is not None}


def apply_cached_scores(session: Session, checks: Sequence[Check], version: ModelVersion,
                        match_of: Callable[[Image], NearCopyMatch | None]) -> list[Check]:
    """The one cached-score step, for the API's submit path and the worker's chunk alike: finish each check whose
    bytes ``version`` already scored (``cached``, with the earlier score's regions and the labelled near-copies
    ``match_of`` finds now, and a video's frames); return the checks still to score."""
    cached = find_cached_scores(session, [check.image_id for check in checks if check.image_id is not None], version.id)
    remaining: list[Check] = []
    for check in checks:
        earlier = cached.get(check.image_id) if check.image_id is not None else None
        if earlier is None or check.image is None or check.status.is_final:
            remaining.append(check)
            continue
        _finish(check, version, earlier.score, cached=True, regions=earlier.regions, match=match_of(check.image),
                frames=earlier.frames)
    return remaining


def finish_cached(session: Session, settings: Settings, checks: Sequence[Check],
                  version: ModelVersion | None = None) -> list[Check]:
    """:func:`apply_cached_scores` at intake, by the active model (``version``, or read here; refuses when there is
    none) with the labelled near-copies known now; returns the checks still to score."""
    version = version if version is not None else require_active_version(session)
    return apply_cached_scores(session, checks, version, lambda image: match_for_image(session, settings, image))


@dataclass
class Submission:
    check: Check
    needs_scoring: bool


def submit_image(session: Session, data: bytes, settings: Settings, *, source: Source = Source.UPLOAD,
                 source_url: str | None = None, page_url: str | None = None, api_key_id: int | None = None,
                 info: MediaInfo | None = None, callback_url: str | None = None) -> Submission:
    """Create a check for image bytes. If the active model already scored these bytes, the check is done at once
    (with the labelled near-copies known now as its match).

    The caller commits, then enqueues when ``needs_scoring`` (so a worker never sees an uncommitted row)."""
    image, inserted = stored_image(session, data, settings, info)
    version = require_active_version(session)
    now = utcnow()
    check = Check(image_id=image.id, image=image, source=Source(source), source_url=source_url, page_url=page_url,
                  api_key_id=api_key_id, callback_url=callback_url, status=CheckStatus.QUEUED, created_at=now,
                  queued_at=now)
    # Bytes this request stored first have no earlier score to reuse: no query for one. The check joins the session
    # only afterwards, so a cached answer is one INSERT of the finished row rather than an INSERT and an UPDATE.
    needs_scoring = inserted or bool(finish_cached(session, settings, [check], version))
    session.add(check)
    session.flush()
    CHECKS_ACCEPTED.labels(Source(source).value).inc()
    return Submission(check=check, needs_scoring=needs_scoring)


def submit_url(session: Session, url: str, settings: Settings, *, page_url: str | None = None,
               api_key_id: int | None = None, callback_url: str | None = None) -> Check:
    """Create a queued check for an image URL, which a worker fetches like a batch item.

    Refused at once: a malformed URL (``invalid_url``) and a host that resolves to an address the fetcher may not
    reach (``blocked_address``). Everything else that can go wrong with the URL (404, not an image, a redirect to a
    refused address, a DNS answer that changed) happens when the worker fetches it and ends the check ``failed``
    with the reason. The caller commits, then enqueues."""
    url = validate_url(url)
    check_address(url, settings)
    require_active_version(session)
    check = Check(source=Source.URL, source_url=url, page_url=page_url, api_key_id=api_key_id,
                  callback_url=callback_url)
    session.add(check)
    session.flush()
    CHECKS_ACCEPTED.labels(Source.URL.value).inc()
    return check


def get_check(session: Session, check_id: str, actor: Actor | None = None) -> Check:
    """The check; ``not_found`` when ``actor`` (None: a trusted internal caller) may not read it."""
    check = get_or_not_found(session, Check, check_id, "check")
    visible_or_not_found(actor, check.api_key_id, "check", check_id)
    return check


def image_visible(session: Session, image: Image, actor: Actor | None) -> bool:
    """Whether the actor may read these bytes: everyone who may read everything, and a submitter with a check of
    them (the same bytes sent by two keys are stored once and readable by both)."""
    owner = owner_key_id(actor)
    if owner is None:
        return True
    return session.scalar(select(Check.id).where(Check.image_id == image.id, Check.api_key_id == owner).limit(1)) \
        is not None


# Polls of a waiting request: every few milliseconds at first, at most every WAIT_POLL_FAST_S during the first
# second (a lone image is scored in tens of milliseconds, and a 50 ms poll added a quarter of that to its answer), then
# every WAIT_POLL_SLOW_S (a check queued behind a batch). Each poll reads only the status; the row is read once, when
# it is final or the wait is up. FAKEWATCH_WAIT_SLOTS bounds how many requests poll at once.
WAIT_POLL_FAST_S = 0.01
WAIT_POLL_SLOW_S = 0.05


def wait_for_final(session: Session, check_id: str, timeout_s: float, bell: Bell | None = None) -> Check:
    """Poll the database until the check is final or the time is up; short sleeps first, since most
    verdicts take tens of milliseconds. With a ``bell`` (the embedded default: backend/checks/broker.py,
    ``verdict_bell``), a worker committing verdicts ends a sleep early, so the answer follows the verdict at once."""
    started = time.monotonic()
    deadline = started + timeout_s
    delay = 0.003
    rung = bell.rung if bell is not None else 0
    while True:
        status = session.scalar(select(Check.status).where(Check.id == check_id))
        if status is None or status.is_final or time.monotonic() >= deadline:
            session.expire_all()  # the row as committed now, not as this session last loaded it
            return get_check(session, check_id)
        session.rollback()  # end the read transaction so the next poll sees new commits
        pause = min(delay, max(0.0, deadline - time.monotonic()))
        if bell is not None:
            rung = bell.wait(rung, pause)  # at once when a verdict was committed since the last look
        else:
            time.sleep(pause)
        delay = min(delay * 1.5, WAIT_POLL_FAST_S if time.monotonic() - started < 1.0 else WAIT_POLL_SLOW_S)


# --- state changes made by the workers --------------------------------------------------------------------


def lease_lapsed(now: datetime, stale_after_s: float) -> ColumnElement[bool]:
    """A running check whose worker is gone: its lease ran out, or (a row claimed before leases existed) it started
    more than ``stale_after_s`` ago."""
    return and_(Check.status == CheckStatus.RUNNING,
                or_(Check.lease_expires_at < now,
                    and_(Check.lease_expires_at.is_(None), Check.started_at < now - timedelta(seconds=stale_after_s))))


def claim_checks(session: Session, check_ids: list[str], stale_after_s: float, lease_s: float = 30.0,
                 claimed_by: str | None = None) -> list[Check]:
    """Mark the given checks running under a lease of ``lease_s`` (and their batches, if queued) and return those
    this caller won.

    A check is claimed when it is queued, or running with a lapsed lease (its worker died); one already final or
    held by a live worker is skipped, which makes a redelivered message harmless."""
    now = utcnow()
    # One conditional UPDATE for the whole chunk; RETURNING names the rows this caller won.
    claimed = list(session.scalars(
        update(Check)
        .where(Check.id.in_(check_ids), or_(Check.status == CheckStatus.QUEUED, lease_lapsed(now, stale_after_s)))
        .values(status=CheckStatus.RUNNING, started_at=now, lease_expires_at=now + timedelta(seconds=lease_s),
                unsent=False, claimed_by=claimed_by, attempts=Check.attempts + 1)
        .returning(Check.id)
    ))
    if claimed:
        mark_batches_running(session, claimed)
    session.commit()
    return list(session.scalars(select(Check).where(Check.id.in_(claimed)))) if claimed else []


def renew_leases(session: Session, check_ids: Sequence[str], lease_s: float) -> int:
    """Extend the lease on those of these checks still running (a worker's heartbeat); commits, returns how many."""
    if not check_ids:
        return 0
    result = session.execute(
        update(Check).where(Check.id.in_(list(check_ids)), Check.status == CheckStatus.RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def end_leases(session: Session, claimants: Sequence[str]) -> int:
    """End now the leases of the running checks these processes hold, processes known to have exited (a pool
    process killed under its live worker): the sweep re-queues them at once, as if their leases had run out, with
    the same count of attempts. Commits; returns how many."""
    if not claimants:
        return 0
    result = session.execute(
        update(Check).where(Check.status == CheckStatus.RUNNING, Check.claimed_by.in_(list(claimants)))
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        .execution_options(synchronize_session=False))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _finish(check: Check, version: ModelVersion, score: float, cached: bool, regions: Sequence[Region] | None,
            match: NearCopyMatch | None, frames: list[Any] | None = None) -> None:
    decision = decide_at_scoring(check, score, version.threshold, version.band, match)
    check.status = CheckStatus.DONE
    check.score = float(score)
    check.verdict = decision.verdict
    check.verdict_source = decision.source
    check.flagged = decision.flagged
    check.match = match.to_dict() if match is not None else None
    check.regions = regions_to_json(regions)
    check.frames = frames
    check.cached = cached
    check.model_version_id = version.id
    check.model_version = version
    check.error_code = check.error_message = None
    check.finished_at = utcnow()
    note_finished(str(getattr(decision.verdict, "value", decision.verdict)), check.created_at, check.finished_at)


def record_score(check: Check, version: ModelVersion, score: float, cached: bool = False,
                 regions: Sequence[Region] | None = None, match: NearCopyMatch | None = None,
                 frames: list[Any] | None = None) -> None:
    """The model's score of a running check, its per-crop regions and any near-duplicate match: the check is done,
    with the verdict the policy decides from them and the image's provenance. A video's ``score`` is its clip
    score (core.policy.clip_score) and ``frames`` its sampled frames."""
    if check.status != CheckStatus.RUNNING:
        return
    _finish(check, version, score, cached, regions, match, frames)


def record_failure(check: Check, code: str, message: str) -> None:
    if check.status.is_final:
        return
    check.status = CheckStatus.FAILED
    check.error_code = code
    check.error_message = message
    check.finished_at = utcnow()
    note_finished("failed", check.created_at, check.finished_at)


def commit_finished(session: Session, checks: Iterable[Check]) -> list[str]:
    """Commit what a worker recorded on these checks, then settle the batches whose last items they were (after
    the commit, so of two workers finishing one batch's last items, the later one sees both); returns the ids of
    the batches this call finished."""
    session.commit()
    batch_ids = {check.batch_id for check in checks if check.batch_id is not None and check.status.is_final}
    if not batch_ids:
        return []
    finished = settle_batches(session, batch_ids)
    session.commit()
    return finished


def attach_image(session: Session, check: Check, data: bytes, settings: Settings,
                 info: MediaInfo | None = None, pixels: PILImage | None = None) -> Image:
    """Give a URL check (a single one or a batch item) the image its URL returned."""
    image = store_image(session, data, settings, info, pixels)
    check.image_id = image.id
    check.image = image
    return image


def sweep_stuck_checks(session: Session, settings: Settings) -> list[str]:
    """Re-queue running checks whose lease lapsed (a killed worker) and checks left queued past ``stuck_after_s``
    (a lost message); a check that already had ``max_attempts`` attempts ends failed instead. A check whose worker
    still renews its lease is never taken, however long it runs. Returns the ids to send again."""
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.stuck_after_s)
    stuck_now = or_(and_(Check.status == CheckStatus.QUEUED, Check.queued_at < cutoff),
                    lease_lapsed(now, settings.stuck_after_s))
    stuck = list(session.scalars(select(Check).where(stuck_now).limit(5000)))
    retry: list[str] = []
    given_up: list[Check] = []
    for check in stuck:
        if check.attempts >= settings.max_attempts:
            record_failure(check, "worker_lost",
                           f"The worker stopped {check.attempts} times while handling this check; it was given up. "
                           "Submit the image again, and check the worker logs if this repeats.")
            given_up.append(check)
        else:
            retry.append(check.id)
    commit_finished(session, given_up)
    return requeue_checks(session, retry, stuck_now)


# A chunk lost this many times is tried one check at a time: the check that kills its worker (a decoder crash, an
# image that exhausts memory) then takes down only itself, and fails alone as worker_lost.
ALONE_AFTER_LOSSES = 2


def lost_repeatedly(session: Session, check_ids: Sequence[str]) -> set[str]:
    """Those of these checks whose worker was lost ALONE_AFTER_LOSSES times or more: each is to be sent alone."""
    if not check_ids:
        return set()
    return set(session.scalars(select(Check.id).where(Check.id.in_(list(check_ids)),
                                                      Check.attempts >= ALONE_AFTER_LOSSES)))


def release_for_tries_alone(session: Session, checks: Sequence[Check]) -> list[str]:
    """Put back checks just claimed together although some were lost ALONE_AFTER_LOSSES times already (a message
    the broker delivered again): queued, their attempt not counted; the caller sends each alone. Commits."""
    ids = list(session.scalars(
        update(Check).where(Check.id.in_([check.id for check in checks]), Check.status == CheckStatus.RUNNING)
        .values(status=CheckStatus.QUEUED, queued_at=utcnow(), started_at=None, lease_expires_at=None,
                attempts=Check.attempts - 1)
        .returning(Check.id)
    ))
    session.commit()
    return ids


def requeue_checks(session: Session, check_ids: Sequence[str], still: ColumnElement[bool]) -> list[str]:
    """Mark checks queued again, only where ``still`` holds at the moment of the update (so a check a worker
    claimed or finished meanwhile is left alone), and commit; returns the ids to send again. The caller sends
    them after this commit, so a worker never receives an id whose row does not say queued."""
    if not check_ids:
        return []
    ids = list(session.scalars(
        update(Check).where(Check.id.in_(list(check_ids)), still)
        .values(status=CheckStatus.QUEUED, queued_at=utcnow(), started_at=None, lease_expires_at=None)
        .returning(Check.id)
    ))
    session.commit()
    return ids
