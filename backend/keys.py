"""API keys: created once, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.access import Actor, require
from backend.audit import record
from backend.schema import ApiKey, isoformat_z, utcnow
from core.enums import AuditAction, Permission, Role
from core.errors import FakewatchError, NotFound

KEY_PREFIX = "fw_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role | str = Role.SUBMITTER, *, actor: Actor) -> tuple[ApiKey, str]:
    """Returns the stored row and the plain key, which is never stored and cannot be shown again."""
    require(actor, Permission.MANAGE_KEYS)
    if not name.strip():
        raise FakewatchError("invalid_request", "A key needs a name, such as the person or script that will use it.")
    if role not in tuple(Role):
        raise FakewatchError("invalid_request", f"role must be one of {', '.join(Role)}, not {role!r}.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip(), prefix=key[:8], key_hash=hash_key(key), role=Role(role))
    session.add(row)
    session.flush()
    record(session, actor, AuditAction.KEY_CREATE, ("api_key", row.id), None,
           {"name": row.name, "role": row.role, "prefix": row.prefix})
    return row, key


def authenticate(session: Session, key: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise FakewatchError("unauthorized",
                             "The API key is unknown or revoked. Create one with `fakewatch keys create NAME`.", 401)
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id_or_name: str, *, actor: Actor) -> ApiKey:
    require(actor, Permission.MANAGE_KEYS)
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
        record(session, actor, AuditAction.KEY_REVOKE, ("api_key", row.id), {"name": row.name, "revoked_at": None},
               {"name": row.name, "revoked_at": isoformat_z(row.revoked_at)})
    return rows[0]


def has_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
