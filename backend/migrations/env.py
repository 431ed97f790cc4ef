"""Alembic environment: migrates whatever database the settings name."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from backend.db import get_engine
from backend.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    # render_as_batch lets ALTER TABLE work on SQLite.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or None
    with get_engine(url).connect() as connection:
        run_migrations(connection)
        connection.commit()


run_online()
