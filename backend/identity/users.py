"""Users of the admin console (viewers, moderators, admins): created with a salted scrypt password hash (werkzeug's), authenticated by name
and password.

On the first run (no moderator yet) ``first_run_lines`` creates ``admin`` with ``settings.admin_password`` or a
random password, and returns the line `fakewatch up` prints so the operator can log in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from backend.identity.access import Actor, require
from backend.identity.audit import record
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import User
from core.enums import USER_ROLES, AuditAction, Permission, Role
from core.errors import FakewatchError, NotFound

ADMIN_NAME = "admin"
MIN_PASSWORD_CHARS = 8
# scrypt at N=2**14, r=8 costs ~16 MiB and tens of milliseconds: cheap for one login, ruinous for guessing.
PASSWORD_METHOD = "scrypt:16384:8:1"
MAX_NAME_CHARS = 100
# Hashes written before werkzeug's: scrypt$N$r$p$salt$digest (base64). Verified once more, then replaced.
LEGACY_PREFIX = "scrypt$"


def hash_password(password: str) -> str:
    """``scrypt:N:r:p$salt$hash``: the cost is in the hash, so it can be raised later without breaking old ones."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith(LEGACY_PREFIX):
        return _verify_legacy(password, stored)
    try:
        return check_password_hash(stored, password)
    except ValueError:  # not a hash werkzeug knows
        return False


def _verify_legacy(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def create_user(session: Session, name: str, password: str, role: Role | str = Role.MODERATOR, *,
                actor: Actor) -> User:
    """A console user with this role (viewer, moderator or admin: submitting is for API keys)."""
    require(actor, Permission.MANAGE_USERS)
    if role not in USER_ROLES:
        raise FakewatchError("invalid_request", f"A console user's role is one of {', '.join(USER_ROLES)}, "
                                                f"not {role!r}.")
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise FakewatchError("invalid_request", f"A moderator needs a name of 1 to {MAX_NAME_CHARS} characters.")
    if len(password) < MIN_PASSWORD_CHARS:
        raise FakewatchError("invalid_request", f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise FakewatchError("conflict", f"There is already a moderator named {name!r}.", 409)
    user = User(name=name, password_hash=hash_password(password), role=Role(role))
    session.add(user)
    session.flush()
    record(session, actor, AuditAction.USER_CREATE, ("user", user.id), None, {"name": user.name, "role": user.role})
    return user


def revoke_user(session: Session, name: str, *, actor: Actor) -> User:
    """Disable a console user: they can no longer log in (their reviews and events stay)."""
    require(actor, Permission.MANAGE_USERS)
    user = session.scalar(select(User).where(User.name == name.strip(), User.is_active.is_(True)))
    if user is None:
        raise NotFound(f"There is no active console user named {name!r}; `fakewatch users list` shows them.")
    user.is_active = False
    record(session, actor, AuditAction.USER_REVOKE, ("user", user.id), {"name": user.name, "is_active": True},
           {"name": user.name, "is_active": False})
    return user


def authenticate(session: Session, name: str, password: str) -> User:
    """The active moderator with this name and password; one refusal for every failure, so names can't be probed."""
    user = session.scalar(select(User).where(User.name == name.strip()))
    if user is None or not user.is_active or not verify_password(password, user.password_hash):
        raise FakewatchError("unauthorized", "Wrong name or password.", 401)
    if user.password_hash.startswith(LEGACY_PREFIX):
        user.password_hash = hash_password(password)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def has_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def ensure_first_admin(session: Session, password: str = "") -> str | None:
    """Create ``admin`` when there is no moderator yet, with this password or a random one; returns it then."""
    if has_users(session):
        return None
    password = password or secrets.token_urlsafe(12)
    create_user(session, ADMIN_NAME, password, Role.ADMIN, actor=Actor.system("fakewatch up"))
    return password


def first_run_lines(settings: Settings) -> list[str]:
    """The console's first password, for `fakewatch up` to print once."""
    with session_scope(settings) as session:
        password = ensure_first_admin(session, settings.admin_password)
    return [f"Admin password: {password} (user {ADMIN_NAME})"] if password else []
