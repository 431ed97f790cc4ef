"""Reading a POST's ``Idempotency-Key`` header and what identifies its request (backend/checks/idempotency.py keeps the
record), and the per-process slots that bound how many requests may wait for a verdict at once."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app, request
from sqlalchemy.orm import Session

from backend.api.auth import current_key
from backend.checks.idempotency import remember, replayed_resource, validate_key

HEADER = "Idempotency-Key"
WAIT_SLOTS = "fakewatch.wait_slots"


@dataclass(frozen=True)
class IdempotentRequest:
    """A POST that carried an ``Idempotency-Key``: its key, the endpoint and a digest of its body."""

    api_key_id: int
    key: str
    endpoint: str
    fingerprint: str

    def earlier_resource(self, session: Session) -> str | None:
        return replayed_resource(session, self.api_key_id, self.key, self.endpoint, self.fingerprint)

    def remember(self, session: Session, resource_id: str) -> None:
        remember(session, self.api_key_id, self.key, self.endpoint, self.fingerprint, resource_id)


def idempotent_request(endpoint: str) -> IdempotentRequest | None:
    """This request's idempotency record to check and write, or None when it carries no key."""
    header = request.headers.get(HEADER)
    if header is None:
        return None
    return IdempotentRequest(current_key().id, validate_key(header.strip()), endpoint, _body_fingerprint())


def _body_fingerprint() -> str:
    """A digest of what the request asks for: its form fields and files for multipart (whose boundary differs each
    time a client encodes the same upload), its raw body otherwise."""
    digest = hashlib.sha256()
    if request.mimetype == "multipart/form-data":
        for name, value in sorted(request.form.items(multi=True)):
            digest.update(f"{name}={value}\0".encode())
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: item[0]):
            data = upload.read()
            upload.seek(0)
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    else:
        digest.update(request.mimetype.encode() + b"\0" + request.get_data(cache=True))
    return digest.hexdigest()


def make_wait_slots(count: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(max(0, count))


@contextmanager
def wait_slot() -> Iterator[bool]:
    """One of this process's ``wait_slots`` for a request that waits for its verdict; False when all are taken (it
    answers 202 at once with Retry-After), so waiting requests never hold every thread and reads stay fast."""
    slots: threading.BoundedSemaphore = current_app.extensions[WAIT_SLOTS]
    acquired = slots.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            slots.release()
