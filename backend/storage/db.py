"""The one engine and session factory per database URL, and sessions on the database a Settings names.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the API, workers and console can share
the file; PostgreSQL gets a real connection pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from backend.settings import Settings
from core.errors import NotFound

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections a process keeps open to a SQLite file: the API's threads (gunicorn's 16) each hold one during a request.
# Past the pool a connection is opened, its pragmas set, and closed again after one request.
SQLITE_POOL_SIZE = 20
Row = TypeVar("Row")


def enable_sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's one engine (and pool) for a database URL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pooled = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_SIZE} if path and path != ":memory:" else {}
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                               **pooled)
        event.listen(engine, "connect", enable_sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=1800)


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


def new_session(settings: Settings) -> Session:
    """A session on the database these settings name; the caller commits and closes it."""
    return _session_factory(settings.database)()


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session on the database these settings name that commits on success and rolls back on error."""
    session = new_session(settings)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_or_not_found(session: Session, model: type[Row], key: Any, what: str) -> Row:
    """The row of ``model`` with this primary key; NotFound (404) naming ``what`` when there is none."""
    # An id from a URL can be any integer; one past a 64-bit column names no row (and would make the driver fail).
    out_of_range = isinstance(key, int) and not -(2**63) <= key < 2**63
    row = None if out_of_range else session.get(model, key)
    if row is None:
        raise NotFound(f"There is no {what} {key!r}.")
    return row


def reset_engines() -> None:
    """Forget engines and their pools: a forked worker process must open connections of its own."""
    for engine_fn in (_session_factory, get_engine):
        engine_fn.cache_clear()
