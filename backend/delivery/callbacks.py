"""Callbacks: when a check reaches a final state, or a batch finishes, its object is POSTed to the callback URL the
submission named (or its key's default), signed with the key's secret, and retried with backoff until the receiver
answers 2xx or the retries (``Settings.callback_retry_delays_s``, 84 minutes by default) run out.

How a callback travels, so that a slow or failing receiver never holds up scoring:

1. Whoever finishes the object (a scoring worker, the API for a cached upload or a cancelled batch) writes one
   ``CallbackDelivery`` row (unique per check or batch, so two finishers make one) and sends its id to the
   ``callbacks`` queue, which a worker of its own serves.
2. ``deliver`` claims the row (a conditional update on its attempt count), POSTs the object as it reads then, and
   records the outcome: delivered, or the error and when the next attempt is due; failed once every retry failed.
3. The sweeper (worker/sweeper.py) sends every pending delivery whose next attempt is due, and writes the rows a
   crash between a commit and step 1 left out, so neither a lost message nor a dead worker loses a callback.

The signature (docs/api.md, "Callbacks"):
``X-Fakewatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``;
``verify_signature`` is what a receiver does (and rejects a stale timestamp, so a captured request cannot be
replayed later). The URL passes the fetcher's address guard at submission and again at every attempt (its host
may resolve elsewhere by then), with the fetcher's timeouts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.batches.progress import summarize
from backend.checks.dispatch import enqueue_deliveries
from backend.checks.served import deliveries_of_checks, served_check
from backend.fetching.fetcher import check_address, post_json, validate_url
from backend.settings import Settings
from backend.storage.schema import ApiKey, Batch, CallbackDelivery, Check, utcnow
from core.enums import FINAL_CHECK_STATUSES, BatchStatus, DeliveryStatus
from core.errors import FakewatchError

log = logging.getLogger("fakewatch.callbacks")

SIGNATURE_HEADER = "X-Fakewatch-Signature"
# Receivers should refuse a signature older (or newer) than this.
DEFAULT_TOLERANCE_S = 300
# A claimed attempt that has not reported back after the fetch timeout plus this long is taken as lost.
LEASE_MARGIN_S = 30.0
# The sweeper writes missing deliveries for objects finished this recently (the created_at index bounds the scan).
MISSING_WINDOW = timedelta(days=2)
MAX_ERROR_CHARS = 500


# --- secrets and signatures --------------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for this body at this time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """What a receiver checks: the HMAC of this raw body with the key's secret, and a timestamp within
    ``tolerance_s`` of now."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# --- submission ----------------------------------------------------------------------------------------------------


def checked_callback_url(url: str, settings: Settings) -> str:
    """A callback URL as a submission (or a key's default) gives it: refused like a URL to fetch (``invalid_url``,
    ``blocked_address``) before anything is stored."""
    url = validate_url(url)
    check_address(url, settings)
    return url


def callback_url_for(key: ApiKey | None, given: str | None, settings: Settings) -> str | None:
    """The URL a new check or batch will be posted to: the one given with it, else its key's default."""
    if given:
        return checked_callback_url(given, settings)
    return key.callback_url if key is not None else None


# --- scheduling ----------------------------------------------------------------------------------------------------


def _owed_checks(check_ids: Sequence[str]) -> Select[Check]:
    # A batch item has no callback URL of its own (its batch is posted), so it never matches.
    return select(Check).where(Check.id.in_(list(check_ids)), Check.callback_url.is_not(None),
                               Check.status.in_(FINAL_CHECK_STATUSES))


def schedule(session: Session, settings: Settings, check_ids: Sequence[str] = (),
             batch_ids: Sequence[str] = ()) -> list[int]:
    """Write a delivery for each of these checks (when final) and batches (when finished) that has a callback URL
    and none yet, commit, and send them to the callbacks worker. Returns the new deliveries' ids."""
    now = utcnow()
    rows: list[CallbackDelivery] = []
    if check_ids:
        for check in session.scalars(_owed_checks(check_ids)):
            rows.append(CallbackDelivery(check_id=check.id, api_key_id=check.api_key_id, url=check.callback_url,
                                         next_attempt_at=now + _lease(settings)))
    if batch_ids:
        batches = select(Batch).where(Batch.id.in_(list(batch_ids)), Batch.callback_url.is_not(None),
                                      Batch.status.in_((BatchStatus.DONE, BatchStatus.CANCELLED)))
        for batch in session.scalars(batches):
            rows.append(CallbackDelivery(batch_id=batch.id, api_key_id=batch.api_key_id, url=batch.callback_url,
                                         next_attempt_at=now + _lease(settings)))
    created = _insert_new(session, rows)
    session.commit()
    if created:
        _send(settings, created)
    return created


def _insert_new(session: Session, rows: Sequence[CallbackDelivery]) -> list[int]:
    """Insert each row unless its check or batch has a delivery already (the unique constraints decide a race)."""
    created: list[int] = []
    for row in rows:
        owner = (CallbackDelivery.check_id == row.check_id if row.check_id
                 else CallbackDelivery.batch_id == row.batch_id)
        if session.scalar(select(exists().where(owner))):
            continue
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        created.append(row.id)
    return created


def _send(settings: Settings, delivery_ids: Sequence[int]) -> None:
    try:
        enqueue_deliveries(settings, delivery_ids)
    except Exception:  # the rows are written: the sweeper sends them once their lease passes
        log.exception("could not send %d callback deliveries; the sweeper will", len(delivery_ids))


def _lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.fetch_timeout_s + LEASE_MARGIN_S)


def schedule_missing(session: Session, settings: Settings) -> list[int]:
    """Deliveries for recently finished checks and batches that have a callback URL but no delivery (a crash
    between finishing one and scheduling its callback, a check given up by the sweeper)."""
    since = utcnow() - MISSING_WINDOW
    no_check_delivery = ~exists().where(CallbackDelivery.check_id == Check.id)
    check_ids = list(session.scalars(
        select(Check.id).where(Check.created_at >= since, Check.callback_url.is_not(None),
                               Check.status.in_(FINAL_CHECK_STATUSES), no_check_delivery).limit(1000)))
    no_batch_delivery = ~exists().where(CallbackDelivery.batch_id == Batch.id)
    batch_ids = list(session.scalars(
        select(Batch.id).where(Batch.created_at >= since, Batch.callback_url.is_not(None),
                               Batch.status.in_((BatchStatus.DONE, BatchStatus.CANCELLED)), no_batch_delivery)
        .limit(1000)))
    if not check_ids and not batch_ids:
        return []
    return schedule(session, settings, check_ids, batch_ids)


def send_due(session: Session, settings: Settings) -> list[int]:
    """Send every pending delivery whose next attempt is due (a retry, or a message lost with its lease passed),
    moving its lease on first so the next sweep does not send it again."""
    now = utcnow()
    due = list(session.scalars(
        update(CallbackDelivery)
        .where(CallbackDelivery.status == DeliveryStatus.PENDING, CallbackDelivery.next_attempt_at <= now)
        .values(next_attempt_at=now + _lease(settings))
        .returning(CallbackDelivery.id)
        .execution_options(synchronize_session=False)
    ))
    session.commit()
    if due:
        _send(settings, due)
    return due


# --- delivery ------------------------------------------------------------------------------------------------------


def payload(session: Session, delivery: CallbackDelivery) -> tuple[str, bytes]:
    """The event name and the raw body: the check or batch object as the API returns it now."""
    # The API's schemas (apiflask, flask, marshmallow: a third of a second to import) only where a body is made, in
    # the callbacks worker: the scoring worker, which only schedules deliveries, starts without them.
    from backend.shapes import BatchOut, CheckOut  # noqa: PLC0415
    if delivery.check_id is not None:
        check = session.get(Check, delivery.check_id)
        assert check is not None
        body: dict[str, Any] = CheckOut(exclude=("callback",)).dump(served_check(session, check))
        event = "check.finished"
    else:
        batch = session.get(Batch, delivery.batch_id)
        assert batch is not None
        body = BatchOut(exclude=("callback",)).dump(summarize(session, batch))
        event = "batch.finished"
    return event, json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def deliver(session: Session, settings: Settings, delivery_id: int) -> DeliveryStatus | None:
    """Make one attempt at a pending delivery and record it; None when someone else holds it or it is not pending."""
    delivery = session.get(CallbackDelivery, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    now = utcnow()
    attempt = delivery.attempts + 1
    claimed = session.scalar(
        update(CallbackDelivery)
        .where(CallbackDelivery.id == delivery_id, CallbackDelivery.status == DeliveryStatus.PENDING,
               CallbackDelivery.attempts == delivery.attempts)
        .values(attempts=attempt, last_attempt_at=now, next_attempt_at=now + _lease(settings))
        .returning(CallbackDelivery.id)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if claimed is None:
        return None
    session.refresh(delivery)
    status_code, error = _attempt(session, settings, delivery)
    delivery.last_status_code = status_code
    if error is None:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = utcnow()
        delivery.last_error = None
    else:
        delivery.last_error = error[:MAX_ERROR_CHARS]
        delays = settings.callback_retry_delays_s
        if attempt > len(delays):
            delivery.status = DeliveryStatus.FAILED
        else:
            delivery.next_attempt_at = utcnow() + timedelta(seconds=delays[attempt - 1])
    session.commit()
    log.info("callback %d to %s: attempt %d, %s", delivery.id, delivery.url, attempt, error or "delivered")
    return delivery.status


def _attempt(session: Session, settings: Settings, delivery: CallbackDelivery) -> tuple[int | None, str | None]:
    """POST once; returns the receiver's status (None when none came) and the error (None when delivered)."""
    key = session.get(ApiKey, delivery.api_key_id) if delivery.api_key_id is not None else None
    if key is None or not key.secret:
        return None, "The key that submitted this has no signing secret; run `fakewatch keys rotate-secret NAME`."
    event, body = payload(session, delivery)
    headers = {"Content-Type": "application/json", "User-Agent": "fakewatch callbacks",
               SIGNATURE_HEADER: signature(key.secret, body, int(time.time())),
               "X-Fakewatch-Event": event, "X-Fakewatch-Delivery": str(delivery.id)}
    try:
        status = post_json(delivery.url, body, headers, settings)
    except FakewatchError as refused:
        return None, f"{refused.code}: {refused.message}"
    except Exception as failure:  # noqa: BLE001 - any failure is this attempt's, recorded, and retried
        return None, f"The delivery failed: {failure}"
    if 200 <= status < 300:
        return status, None
    return status, f"The receiver answered HTTP {status}."


def deliveries_for_checks(session: Session, check_ids: Sequence[str]) -> dict[str, CallbackDelivery]:
    """The deliveries of these checks, by check id (the console shows them beside each check)."""
    return deliveries_of_checks(session, check_ids)


def describe_delivery(delivery: CallbackDelivery | None) -> str | None:
    """One line for a person: what became of a callback."""
    if delivery is None:
        return None
    said = f", last: {delivery.last_error}" if delivery.last_error else ""
    return f"{delivery.status} after {delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}{said}"


def delivery_of(session: Session, *, check_id: str | None = None,
                batch_id: str | None = None) -> CallbackDelivery | None:
    owner = CallbackDelivery.check_id == check_id if check_id else CallbackDelivery.batch_id == batch_id
    return session.scalar(select(CallbackDelivery).where(owner))
