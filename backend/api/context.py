"""What a request's view takes from its app: the settings the app factory was given, and one database session
per request on the database those settings name, closed when the request ends."""

from __future__ import annotations

from flask import Response, current_app, g
from sqlalchemy.orm import Session

from backend.settings import Settings
from backend.storage.db import new_session

EXTENSION = "fakewatch"


def app_settings() -> Settings:
    settings: Settings = current_app.extensions[EXTENSION]
    return settings


def db() -> Session:
    if "db" not in g:
        g.db = new_session(app_settings())
    session: Session = g.db
    return session


def close_session(_error: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


RETRY_AFTER = "fakewatch_retry_after"


def set_retry_after(seconds: int | str) -> None:
    """The Retry-After this response carries (a 202's poll interval, an outage's pause)."""
    setattr(g, RETRY_AFTER, str(seconds))


def apply_retry_after(response: Response) -> Response:
    """Runs after Flask-Limiter's own after-request hook, which sets Retry-After on every response to its window's
    reset: a 202 or a 503 keeps the pause that answer means."""
    forced = g.pop(RETRY_AFTER, None)
    if forced is not None:
        response.headers["Retry-After"] = forced
    return response
