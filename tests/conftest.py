"""Shared fixtures. The detector fixtures (tiny dataset, tiny model) come from tests/fixtures_models.py.

``stack`` is parametrised over both backends; ``embedded_stack`` and ``production_stack`` give one each.
Each starts once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, start_stack

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_images"]

STACK_KINDS = ["embedded", "redis-postgres"]


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Point this process's settings at a fresh data dir (embedded default) and forget cached engines."""
    from backend.db import reset_engines
    from backend.queue import sender
    from backend.settings import get_settings

    for name in ("FAKEWATCH_DATABASE_URL", "FAKEWATCH_BROKER_URL", "FAKEWATCH_FETCH_ALLOWLIST", "FAKEWATCH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKEWATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    reset_engines()
    sender.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()
    reset_engines()
    sender.cache_clear()


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
