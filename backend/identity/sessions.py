"""Console logins that last across reloads and tabs: a random token in a browser cookie, its SHA-256 in
``console_sessions`` with an expiry (FAKEWATCH_CONSOLE_SESSION_HOURS, 12 by default). Logging out ends the row,
so a copied cookie is worth nothing afterwards; a deactivated moderator's sessions stop working at once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.storage.schema import ConsoleSession, User, utcnow
from core.errors import FakewatchError


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_console_session(session: Session, user_name: str, hours: float) -> str:
    """A new login for this moderator; returns the token the browser keeps (never stored as such)."""
    if hours <= 0:
        raise FakewatchError("invalid_request", "FAKEWATCH_CONSOLE_SESSION_HOURS must be more than 0.")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(ConsoleSession(token_hash=_digest(token), user_name=user_name, created_at=now,
                               expires_at=now + timedelta(hours=hours)))
    session.flush()
    return token


def console_session_user(session: Session, token: str | None) -> str | None:
    """The moderator a token logs in, or None when it is unknown, ended, expired or its moderator inactive."""
    if not token:
        return None
    row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _digest(token)))
    if row is None or row.ended_at is not None or row.expires_at <= utcnow():
        return None
    active = session.scalar(select(User.is_active).where(User.name == row.user_name))
    return row.user_name if active else None


def end_console_session(session: Session, token: str | None) -> None:
    """Log out: the token no longer logs anyone in, in any tab."""
    if token:
        session.execute(update(ConsoleSession).where(ConsoleSession.token_hash == _digest(token),
                                                     ConsoleSession.ended_at.is_(None)).values(ended_at=utcnow()))
