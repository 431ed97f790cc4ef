"""Shared fixtures. The detector fixtures (tiny dataset, tiny model) come from tests/fixtures_models.py.

Tests configure fakewatch the way its entry points are configured: a ``Settings`` object (``settings``, on a fresh
data dir, with nothing read from the environment) handed to ``create_app``, to the services and to the console.

``stack`` is parametrised over both backends; ``embedded_stack`` and ``production_stack`` give one each.
Each starts once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from backend.api import create_app
from backend.identity.keys import create_key
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import ModelVersion
from backend.training.versions import register_model
from core.enums import Role
from testbed.s3server import SeaweedServer, start_seaweed
from testbed.stack import Stack, create_postgres_database, drop_postgres_database, isolated_settings, start_stack
from tests.actors import OPERATOR

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_images"]

STACK_KINDS = ["embedded", "redis-postgres"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a fresh embedded default (SQLite database and broker) under this test's own data dir."""
    return isolated_settings(data_dir=tmp_path / "var")


def _migrated(settings: Settings) -> Iterator[Settings]:
    upgrade_database(settings.database)
    try:
        yield settings
    finally:
        get_engine(settings.database).dispose()


@pytest.fixture
def database(settings: Settings) -> Iterator[Settings]:
    """``settings`` with its database migrated to the latest schema."""
    yield from _migrated(settings)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """A migrated database on each dialect in turn (PostgreSQL: a database of its own, dropped afterwards), for the
    services whose SQL differs between them."""
    if request.param == "sqlite":
        yield from _migrated(settings)
        return
    url = create_postgres_database()
    try:
        yield from _migrated(settings.model_copy(update={"database_url": url}))
    finally:
        drop_postgres_database(url)


@pytest.fixture
def active_model(database: Settings, tiny_model_path: Path) -> ModelVersion:
    """The tiny trained model, registered and active."""
    with session_scope(database) as session:
        return register_model(session, tiny_model_path, activate=True)


@pytest.fixture
def app(database: Settings) -> APIFlask:
    """The API on the fresh database, with no worker: checks and batches stay queued."""
    return create_app(database, test_config={"TESTING": True})


@pytest.fixture
def client(app: APIFlask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_key(database: Settings) -> str:
    with session_scope(database) as session:
        # An admin key, so the tests of every endpoint can call it; tests/test_access.py tries the other roles.
        _, key = create_key(session, "tests", Role.ADMIN, actor=OPERATOR)
    return key


@pytest.fixture
def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


_stacks: dict[str, Stack] = {}


def _get_stack(kind: str, tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Stack:
    if kind not in _stacks:
        _stacks[kind] = start_stack(kind, tmp_path_factory.mktemp(f"stack-{kind}"), model_path)
    return _stacks[kind]


@pytest.fixture(scope="session", params=STACK_KINDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Stack:
    """A running API + worker, on each backend in turn."""
    return _get_stack(request.param, tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Stack:
    return _get_stack("embedded", tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="session")
def production_stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Stack:
    return _get_stack("redis-postgres", tmp_path_factory, tiny_model_path)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for stack in _stacks.values():
        stack.stop()
    _stacks.clear()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1 for the session; fails, never skips, if it cannot start."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()
