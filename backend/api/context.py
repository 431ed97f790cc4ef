"""What a request's view takes from its app: the settings the app factory was given, and one database session
per request on the database those settings name, closed when the request ends."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from backend.db import new_session
from backend.settings import Settings

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
