"""``Idempotency-Key`` on POSTs: a client that sends a request again (its connection dropped before the answer
came) gets back what the first one created instead of a second check or batch.

The record is written in the same transaction as what it names, so either both exist or neither does; two
copies of one request racing each other meet at the unique (key, API key) constraint, and the loser answers with
the winner's object."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.storage.schema import IdempotencyKey, utcnow
from core.errors import FakewatchError

MAX_KEY_CHARS = 200
# How long a key is remembered: far longer than any client retries a request (the CLI gives up after about 20 s).
KEEP_FOR = timedelta(hours=24)


def validate_key(key: str) -> str:
    if not 0 < len(key) <= MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise FakewatchError("invalid_request",
                             f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters.")
    return key


def replayed_resource(session: Session, api_key_id: int, key: str, endpoint: str, fingerprint: str) -> str | None:
    """The id of what an earlier request with this key created, or None when the key is new. The same key on a
    different request (another endpoint or body) is refused: it would otherwise answer with the wrong object."""
    row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key_id,
                                                      IdempotencyKey.key == key))
    if row is None:
        return None
    if row.endpoint != endpoint or row.fingerprint != fingerprint:
        raise FakewatchError("idempotency_conflict", "This Idempotency-Key was already used for a different "
                             "request; send a new key with each new request.", 409)
    return row.resource_id


def remember(session: Session, api_key_id: int, key: str, endpoint: str, fingerprint: str, resource_id: str) -> None:
    """Record the key with what its request created (no commit: it commits with that object)."""
    session.add(IdempotencyKey(api_key_id=api_key_id, key=key, endpoint=endpoint, fingerprint=fingerprint,
                               resource_id=resource_id))
    session.flush()


def forget_old_keys(session: Session) -> int:
    """Drop keys older than ``KEEP_FOR`` (commits; the sweeper calls it); returns how many."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEEP_FOR))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
