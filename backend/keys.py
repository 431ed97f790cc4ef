"""API keys: created once, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.schema import ApiKey, utcnow
from core.errors import FakewatchError, NotFound

KEY_PREFIX = "fw_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Returns the stored row and the plain key, which is never stored and cannot be shown again."""
    if not name.strip():
        raise FakewatchError("invalid_request", "A key needs a name, such as the person or script that will use it.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip(), prefix=key[:8], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise FakewatchError("unauthorized", "This API key is not recognised or was revoked. Create one with "
                                             "`fakewatch keys create NAME`.", 401)
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id_or_name: str) -> ApiKey:
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if key_id_or_name.isdigit():
        query = query.where(ApiKey.id == int(key_id_or_name))
    else:
        query = query.where(ApiKey.name == key_id_or_name)
    rows = list(session.scalars(query))
    if not rows:
        raise NotFound(f"No active API key with id or name {key_id_or_name!r}; `fakewatch keys list` shows them.")
    for row in rows:
        row.revoked_at = utcnow()
    return rows[0]


def has_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
