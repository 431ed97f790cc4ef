"""Moderators of the admin console: created with a scrypt password hash, authenticated by name and password.

On the first run (no moderator yet) ``first_run_lines`` creates ``admin`` with ``settings.admin_password`` or a
random password, and returns the line `fakewatch up` prints so the operator can log in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.errors import FakewatchError
from backend.schema import User
from backend.settings import Settings, get_settings

ADMIN_NAME = "admin"
MIN_PASSWORD_CHARS = 8
# scrypt at N=2**14, r=8 costs ~16 MiB and tens of milliseconds: cheap for one login, ruinous for guessing.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_NAME_CHARS = 100


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), so the cost can be raised later without breaking old hashes."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def create_user(session: Session, name: str, password: str) -> User:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise FakewatchError("invalid_request", f"A moderator needs a name of 1 to {MAX_NAME_CHARS} characters.")
    if len(password) < MIN_PASSWORD_CHARS:
        raise FakewatchError("invalid_request", f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise FakewatchError("conflict", f"There is already a moderator named {name!r}.", 409)
    user = User(name=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> User:
    """The active moderator with this name and password; one refusal for every failure, so names can't be probed."""
    user = session.scalar(select(User).where(User.name == name.strip()))
    if user is None or not user.is_active or not verify_password(password, user.password_hash):
        raise FakewatchError("unauthorized", "Wrong name or password.", 401)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def has_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def ensure_first_admin(session: Session, settings: Settings | None = None) -> str | None:
    """Create ``admin`` when there is no moderator yet; returns its password then, else None."""
    if has_users(session):
        return None
    password = (settings or get_settings()).admin_password or secrets.token_urlsafe(12)
    create_user(session, ADMIN_NAME, password)
    return password


def first_run_lines() -> list[str]:
    """The console's first password, for `fakewatch up` to print once."""
    from backend.db import session_scope

    with session_scope() as session:
        password = ensure_first_admin(session)
    return [f"Admin password: {password} (user {ADMIN_NAME})"] if password else []
