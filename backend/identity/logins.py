"""The console's front door: logging in with a growing delay after failed attempts, then a lockout window, per
user name and per address (the settings' ``login_*`` values), every attempt an audit event.

The limiter counts the audit trail's own ``login.failed`` events, so it holds across console processes and
restarts and needs no table of its own. A refused attempt (too soon) is never checked against the password: a
guesser learns nothing while it waits, and the refusal is recorded as ``login.throttled`` (which does not lengthen
the wait, so an attacker cannot keep a user locked out beyond the lockout window by hammering the form)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from backend.identity.access import Actor
from backend.identity.audit import record
from backend.identity.users import authenticate
from backend.settings import Settings
from backend.storage.schema import AuditEvent, User, utcnow
from core.enums import AuditAction
from core.errors import FakewatchError

LOGIN_OBJECT = "login"


@dataclass(frozen=True)
class Throttle:
    """Failures counted against a name or an address, and when the next attempt may be made (None: now)."""

    failures: int
    retry_at: datetime | None


def _throttle(session: Session, settings: Settings, whose: ColumnElement[bool], now: datetime) -> Throttle:
    window_start = now - timedelta(seconds=settings.login_failure_window_s)
    last_success = session.scalar(select(func.max(AuditEvent.at)).where(whose, AuditEvent.action == AuditAction.LOGIN))
    since = max(window_start, last_success) if last_success is not None else window_start
    failures, last_failure = session.execute(
        select(func.count(), func.max(AuditEvent.at))
        .where(whose, AuditEvent.action == AuditAction.LOGIN_FAILED, AuditEvent.at > since)).one()
    if not failures or last_failure is None or failures < settings.login_delay_after_failures:
        return Throttle(int(failures or 0), None)
    if failures >= settings.login_lockout_failures:
        wait = settings.login_lockout_s
    else:
        wait = min(settings.login_delay_base_s * 2 ** (failures - settings.login_delay_after_failures),
                   settings.login_lockout_s)
    return Throttle(int(failures), last_failure + timedelta(seconds=wait))


def retry_after(session: Session, settings: Settings, name: str, address: str | None,
                now: datetime | None = None) -> float:
    """Seconds until this name (and this address) may try again; 0 when it may try now."""
    now = now or utcnow()
    checks: list[ColumnElement[bool]] = [and_(AuditEvent.object_type == LOGIN_OBJECT,
                                              AuditEvent.object_id == name.strip())]
    if address:
        checks.append(AuditEvent.address == address)
    retry_ats = [t.retry_at for t in (_throttle(session, settings, whose, now) for whose in checks) if t.retry_at]
    return max([0.0, *((at - now).total_seconds() for at in retry_ats)])


def log_in(session: Session, settings: Settings, name: str, password: str, address: str | None = None) -> User:
    """The user with this name and password, with a ``login.succeeded`` event (committed by the caller). A wrong
    name or password, or an attempt made too soon, is refused; its event is committed here, whatever the caller
    does next."""
    name = name.strip()
    wait = retry_after(session, settings, name, address)
    if wait > 0:
        record(session, Actor.anonymous(name[:100]), AuditAction.LOGIN_THROTTLED, (LOGIN_OBJECT, name),
               after={"retry_after_s": math.ceil(wait)}, address=address)
        session.commit()
        raise FakewatchError("rate_limited", f"Too many failed logins: try again in {math.ceil(wait)} s.", 429)
    try:
        user = authenticate(session, name, password)
    except FakewatchError:
        session.rollback()
        record(session, Actor.anonymous(name[:100]), AuditAction.LOGIN_FAILED, (LOGIN_OBJECT, name),
               address=address)
        session.commit()
        raise
    record(session, Actor.of_user(user), AuditAction.LOGIN, (LOGIN_OBJECT, name), address=address)
    return user
