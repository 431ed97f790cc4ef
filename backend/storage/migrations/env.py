"""Alembic environment: migrates the database whose URL ``backend.storage.migrate.alembic_config`` was given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from backend.storage.db import get_engine
from backend.storage.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    # render_as_batch lets ALTER TABLE work on SQLite.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic_config(database_url) names the database to migrate")
    with get_engine(url).connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch-mode rebuild drops and re-creates a table other tables point at; with foreign keys enforced,
            # SQLite refuses the drop. Set before the first statement opens a transaction (it is a no-op inside one).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            run_migrations(connection)
            connection.commit()
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


run_online()
