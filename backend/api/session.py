"""One database session per request, closed when the request ends."""

from __future__ import annotations

from flask import g
from sqlalchemy.orm import Session

from backend.db import new_session


def db() -> Session:
    if "db" not in g:
        g.db = new_session()
    session: Session = g.db
    return session


def close_session(_error: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()
