"""API keys: created once, shown once, stored as a SHA-256 hash. Each key also has a callback-signing secret
(kept as is: receivers verify with it) and may have a default callback URL."""

from __future__ import annotations

import hashlib
import secrets
from functools import cache

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from backend.identity.access import Actor, require
from backend.identity.audit import record
from backend.storage.schema import ApiKey, isoformat_z, utcnow
from core.enums import AuditAction, Permission, Role
from core.errors import FakewatchError, NotFound

KEY_PREFIX = "fw_"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A callback-signing secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_hex(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role | str = Role.SUBMITTER, *, actor: Actor,
               callback_url: str | None = None) -> tuple[ApiKey, str]:
    """Returns the stored row (with its signing secret) and the plain key, which is never stored and cannot be
    shown again. ``callback_url`` must have been checked (backend.delivery.callbacks.checked_callback_url)."""
    require(actor, Permission.MANAGE_KEYS)
    if not name.strip():
        raise FakewatchError("invalid_request", "A key needs a name, such as the person or script that will use it.")
    if role not in tuple(Role):
        raise FakewatchError("invalid_request", f"role must be one of {', '.join(Role)}, not {role!r}.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip(), prefix=key[:8], key_hash=hash_key(key), role=Role(role), secret=new_secret(),
                 callback_url=callback_url or None)
    session.add(row)
    session.flush()
    record(session, actor, AuditAction.KEY_CREATE, ("api_key", row.id), None,
           {"name": row.name, "role": row.role, "prefix": row.prefix})
    return row, key


@cache
def _key_by_hash() -> Select[ApiKey]:
    # Built once, the hash bound at each call: every API request runs it.
    return select(ApiKey).where(ApiKey.key_hash == bindparam("key_hash"))


def authenticate(session: Session, key: str) -> ApiKey:
    row = session.scalar(_key_by_hash(), {"key_hash": hash_key(key)})
    if row is None or row.revoked_at is not None:
        raise FakewatchError("unauthorized", "This API key is not recognised or was revoked. Create one with "
                                             "`fakewatch keys create NAME`.", 401)
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def _active_keys(session: Session, key_id_or_name: str) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    by_id = key_id_or_name.isdigit()
    query = query.where(ApiKey.id == int(key_id_or_name) if by_id else ApiKey.name == key_id_or_name)
    rows = list(session.scalars(query.order_by(ApiKey.id)))
    if not rows:
        raise NotFound(f"No active API key with id or name {key_id_or_name!r}; `fakewatch keys list` shows them.")
    return rows


def rotate_secret(session: Session, key_id_or_name: str, *, actor: Actor) -> tuple[ApiKey, str]:
    """A new callback-signing secret for this key (every key of that name); callbacks sent from now on use it."""
    require(actor, Permission.MANAGE_KEYS)
    rows = _active_keys(session, key_id_or_name)
    secret = new_secret()
    for row in rows:
        row.secret = secret
        # The secret itself never goes into the trail: only that it changed.
        record(session, actor, AuditAction.KEY_ROTATE_SECRET, ("api_key", row.id), None, {"name": row.name})
    session.flush()
    return rows[0], secret


def set_callback_url(session: Session, key_id_or_name: str, url: str | None, *, actor: Actor) -> ApiKey:
    """Set (or, with None, clear) the key's default callback URL, already checked by the caller."""
    require(actor, Permission.MANAGE_KEYS)
    rows = _active_keys(session, key_id_or_name)
    for row in rows:
        record(session, actor, AuditAction.KEY_SET_CALLBACK, ("api_key", row.id), {"callback_url": row.callback_url},
               {"callback_url": url or None})
        row.callback_url = url or None
    session.flush()
    return rows[0]


def revoke_key(session: Session, key_id_or_name: str, *, actor: Actor) -> ApiKey:
    require(actor, Permission.MANAGE_KEYS)
    rows = _active_keys(session, key_id_or_name)
    for row in rows:
        row.revoked_at = utcnow()
        record(session, actor, AuditAction.KEY_REVOKE, ("api_key", row.id), {"name": row.name, "revoked_at": None},
               {"name": row.name, "revoked_at": isoformat_z(row.revoked_at)})
    return rows[0]


def has_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
