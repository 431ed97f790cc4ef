"""Schema migrations, run by `fakewatch db upgrade` and `fakewatch up`."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade_database(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def at_head(database_url: str) -> bool:
    """Whether the database's schema is at the newest revision this code knows (False when it cannot be reached)."""
    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads()) == heads
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def wait_for_head(database_url: str, timeout_s: float, poll_s: float = 2.0) -> bool:
    """Wait until the schema is at head (another process migrates it: the Kubernetes migration Job)."""
    deadline = time.monotonic() + timeout_s
    while not at_head(database_url):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True
