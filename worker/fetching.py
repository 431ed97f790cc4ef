"""Fetching a chunk's URLs concurrently, politely and within a time budget.

Each URL goes through the SSRF-safe fetcher (backend.fetching.fetcher). Around it:

- a thread pool so one slow host does not serialise the chunk, with at most ``PER_HOST_LIMIT`` requests in flight
  to any one host from this process (the limit is per worker process; N processes make N times as many);
- retries for transient failures (timeouts, dropped connections, 5xx, 429) with exponential backoff, waiting at
  least what a ``Retry-After`` header asked for; permanent failures (404, not an image, too large, a refused
  address, a name that does not resolve) are returned at once;
- one deadline for the whole chunk, so a chunk ends well before the sweeper would think its worker died: a
  fetch's own timeout is shortened to what is left, and a retry that would wait past it is not made. URLs not
  even started by then come back as ``NOT_STARTED`` so the caller can queue them again.

Nothing here touches the database: callers get a result per URL and record it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL.Image import Image as PILImage
from sqlalchemy.orm import Session

from backend.checks.dispatch import enqueue_scoring
from backend.checks.metrics import FETCH_FAILURES
from backend.checks.service import attach_image, record_failure, requeue_checks
from backend.fetching.fetcher import FetchedImage, FetchError, fetch_image
from backend.settings import Settings
from backend.storage.schema import Check
from core.enums import CheckStatus
from core.errors import FakewatchError

log = logging.getLogger("fakewatch.worker")

PER_HOST_LIMIT = 4
MAX_THREADS = 16
MAX_TRIES = 3
BACKOFF_BASE_S = 0.5
# A Retry-After longer than this is not waited for inside a task; the item fails with the server's answer.
MAX_RETRY_WAIT_S = 30.0
# Share of the time before the sweeper steps in (or the task's soft limit) that a chunk may spend fetching.
BUDGET_SHARE = 0.6


@dataclass
class FetchOutcome:
    """What became of one URL: ``image`` on success, else ``error``; neither when it was never started."""

    url: str
    image: FetchedImage | None = None
    error: FakewatchError | None = None
    tries: int = 0

    @property
    def started(self) -> bool:
        return self.tries > 0


class HostLimiter:
    """A semaphore per host, shared by every chunk this process fetches."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}

    def for_url(self, url: str) -> threading.BoundedSemaphore:
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            if host not in self._semaphores:
                self._semaphores[host] = threading.BoundedSemaphore(self.limit)
            return self._semaphores[host]


_host_limiter = HostLimiter(PER_HOST_LIMIT)


def chunk_budget_s(settings: Settings) -> float:
    """How long a chunk may spend fetching: a share of the shorter of the sweeper's patience and the task limit."""
    return BUDGET_SHARE * min(settings.stuck_after_s, float(settings.task_soft_time_limit_s))


def fetch_all(urls: Sequence[str], settings: Settings, *, budget_s: float | None = None,
              limiter: HostLimiter | None = None) -> list[FetchOutcome]:
    """Fetch every URL (retrying transient failures) and return one outcome per URL, in order."""
    deadline = time.monotonic() + (budget_s if budget_s is not None else chunk_budget_s(settings))
    limiter = limiter or _host_limiter
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(urls)), thread_name_prefix="fetch") as pool:
        return list(pool.map(lambda url: fetch_with_retries(url, settings, deadline, limiter), urls))


def fetch_with_retries(url: str, settings: Settings, deadline: float, limiter: HostLimiter) -> FetchOutcome:
    outcome = FetchOutcome(url)
    while outcome.tries < MAX_TRIES:
        attempt = _fetch_once(url, settings, deadline, limiter.for_url(url))
        if attempt is None:  # the budget ran out while waiting for the host
            return outcome
        outcome.tries += 1
        if isinstance(attempt, FetchedImage):
            outcome.image, outcome.error = attempt, None
            return outcome
        outcome.error = attempt
        if not (isinstance(attempt, FetchError) and attempt.transient) or outcome.tries >= MAX_TRIES:
            break
        wait = retry_wait_s(attempt, outcome.tries)
        if wait > MAX_RETRY_WAIT_S or time.monotonic() + wait >= deadline:
            break
        time.sleep(wait)
    if outcome.error is not None and outcome.tries > 1:
        outcome.error = FakewatchError(outcome.error.code,
                                       f"{outcome.error.message} (gave up after {outcome.tries} tries)",
                                       outcome.error.status)
    return outcome


def retry_wait_s(error: FetchError, tries: int) -> float:
    """Exponential backoff, but never sooner than the server's Retry-After."""
    return max(BACKOFF_BASE_S * 2 ** (tries - 1), error.retry_after or 0.0)


def _fetch_once(url: str, settings: Settings, deadline: float,
                slot: threading.BoundedSemaphore) -> FetchedImage | FakewatchError | None:
    """One fetch holding one of the host's slots; None when the deadline passed before a slot was free."""
    if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
        return None
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            return None
        return fetch_image(url, settings, deadline=deadline)  # never past what the chunk has left
    except FakewatchError as error:
        return error
    except Exception as error:  # noqa: BLE001 - one odd URL must end as that item's failure, not the chunk's
        return FetchError("fetch_failed", f"Fetching {url} failed unexpectedly ({error}).", 400)
    finally:
        slot.release()


def fetch_into_checks(session: Session, checks: Sequence[Check], settings: Settings,
                      pixels: dict[int, PILImage] | None = None) -> list[str]:
    """Fetch the images of the running checks that have a URL but no image yet (single URL checks and batch items),
    and record each outcome on its check: the image attached, or the failure with its reason. Checks the chunk had
    no time to start are put back in the queue and sent again; their ids are returned. ``pixels`` collects, by image
    id, what the fetcher decoded, so scoring does not decode those images again."""
    waiting = [check for check in checks if check.image_id is None and check.status == CheckStatus.RUNNING]
    for check in waiting:
        if not check.source_url:
            record_failure(check, "invalid_request", "The check has neither an image nor a URL.")
    waiting = [check for check in waiting if check.source_url]
    outcomes = fetch_all([check.source_url or "" for check in waiting], settings)
    released: list[str] = []
    for check, outcome in zip(waiting, outcomes, strict=True):
        if outcome.image is not None:
            _attach(session, check, outcome.image, settings)
            if pixels is not None and outcome.image.pixels is not None and check.image_id is not None:
                pixels[check.image_id] = outcome.image.pixels
        elif outcome.error is not None:
            FETCH_FAILURES.labels("image").inc()
            record_failure(check, outcome.error.code, outcome.error.message)
        else:
            released.append(check.id)
    if released:
        released = requeue_checks(session, released, Check.status == CheckStatus.RUNNING)
        enqueue_scoring(settings, released)
        log.info("%d items were not fetched within the chunk's time budget and were queued again", len(released))
    return released


def _attach(session: Session, check: Check, fetched: FetchedImage, settings: Settings) -> None:
    try:
        attach_image(session, check, fetched.data, settings, fetched.info, fetched.pixels)
    except FakewatchError as error:
        record_failure(check, error.code, error.message)
