"""What every console page works with: the console's settings and database sessions on the database they name.

The console's start-up reads ``Settings()`` once per process (``fakewatch admin`` passes its environment on to
Streamlit). Something that runs the console itself, such as a test driving it with ``AppTest``, hands it other
settings by putting them in the session state under ``SETTINGS_KEY`` before the first run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from sqlalchemy.orm import Session

from backend.settings import Settings
from backend.storage import db

SETTINGS_KEY = "fakewatch_settings"


@st.cache_resource(show_spinner=False)
def _process_settings() -> Settings:
    return Settings()


def console_settings() -> Settings:
    settings = st.session_state.get(SETTINGS_KEY)
    return settings if isinstance(settings, Settings) else _process_settings()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session on the console's database that commits on success and rolls back on error."""
    with db.session_scope(console_settings()) as session:
        yield session
