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


def apply_response_headers(response: Response) -> Response:
    """Headers every answer gets, set last. Runs after Flask-Limiter's own after-request hook, which puts its
    window's reset in Retry-After on every response: that header stays only on a 429 (the limiter's own) and on
    answers that chose a pause themselves (a 202's poll interval, a 503's outage pause), so no client reads a
    200's Retry-After as a request to slow down. nosniff on everything: JSON, the spec and /docs are never to be
    sniffed into another type."""
    forced = g.pop(RETRY_AFTER, None)
    if forced is not None:
        response.headers["Retry-After"] = forced
    elif response.status_code != 429:
        response.headers.pop("Retry-After", None)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
