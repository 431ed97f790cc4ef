"""Local wake-ups on the embedded default (backend/checks/wakeups.py, backend/checks/broker.py): a worker fetches a
message as soon as a producer on the same machine committed it, still fetches after a long idle spell, and falls
back to its own polls when no wake-up reaches it; a request waiting for a verdict is rung by the worker that
committed it."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub

import backend.checks.service
from backend.checks.broker import TRANSPORT_PATH, EmbeddedTransport, ring_verdicts, verdict_bell, wake_folder
from backend.checks.dispatch import celery_config
from backend.checks.service import submit_image, wait_for_final
from backend.checks.wakeups import Bell, WakeSocket, wake_all
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check
from backend.training.versions import register_model
from core.enums import CheckStatus
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.stack import isolated_settings

# Longer than any test here runs: a message that arrives within a test's deadline was fetched on a wake-up, not by
# a poll of the timer.
NEVER_S = 3600.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a path short enough for Unix sockets (pytest's own can be too long)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="fw-") as name:
        yield Path(name)


def test_a_wake_up_reaches_every_live_socket_and_clears_dead_ones(short_dir: Path) -> None:
    folder = short_dir / "waiters"
    first, second = WakeSocket.bind(folder), WakeSocket.bind(folder)
    assert first is not None and second is not None
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead_path = folder / "999999-dead.sock"
    dead.bind(str(dead_path))
    dead.close()  # its process died without removing it
    assert wake_all(folder) == 2
    assert first.drain() == 1 and second.drain() == 1
    assert not dead_path.exists()
    first.close()
    assert not first.path.exists() and wake_all(folder) == 1
    second.close()
    assert wake_all(short_dir / "nobody") == 0


def test_no_socket_where_the_path_is_too_long_for_one(short_dir: Path) -> None:
    assert WakeSocket.bind(short_dir / ("x" * 120)) is None


def test_a_bell_counts_wake_ups_and_a_wait_returns_on_one(short_dir: Path) -> None:
    rung = Bell(WakeSocket.bind(short_dir / "waiters") or pytest.fail("no socket"))
    assert rung.wait(0, 0.01) == 0  # nothing sent: the wait runs out
    wake_all(short_dir / "waiters")
    assert rung.wait(0, 30) >= 1


def test_only_the_embedded_broker_on_a_file_has_wake_up_folders() -> None:
    assert wake_folder("sqla+sqlite:////data/broker.db", "consumers") == Path("/data/broker.db.consumers")
    assert wake_folder("sqlite:////data/broker.db", "waiters") == Path("/data/broker.db.waiters")
    for url in ("redis://localhost:6379/0", "sqla+postgresql://db/broker", "sqla+sqlite://", "memory://"):
        assert wake_folder(url, "consumers") is None
    assert verdict_bell(isolated_settings(broker_url="redis://localhost:6379/0")) is None


class Worker:
    """A consumer on the embedded transport in an event loop, as a Celery worker runs it, without Celery."""

    def __init__(self, url: str, poll_s: float, idle_poll_s: float) -> None:
        self.connection = Connection(url, transport=TRANSPORT_PATH,
                                     transport_options={"polling_interval": poll_s,
                                                        "idle_polling_interval": idle_poll_s})
        self.hub = Hub()
        self.received: list[Any] = []
        self.consumer = Consumer(self.connection.default_channel, queues=[Queue("scoring")], accept=["json"],
                                 callbacks=[self._take])
        self.consumer.consume()
        self.connection.transport.register_with_event_loop(self.connection.connection, self.hub)

    def _take(self, body: Any, message: Any) -> None:
        self.received.append(body)
        message.ack()

    @property
    def transport(self) -> EmbeddedTransport:
        transport = self.connection.transport
        assert isinstance(transport, EmbeddedTransport)
        return transport

    def run_until(self, count: int, timeout_s: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            self.hub.run_once()
        return self.received

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()
        self.hub.close()


def _send(url: str, body: Any) -> None:
    with Connection(url, transport=TRANSPORT_PATH) as connection:
        Producer(connection.default_channel).publish(body, routing_key="scoring", serializer="json")


def test_a_worker_fetches_a_message_when_woken_and_again_after_idling(short_dir: Path) -> None:
    url = f"sqlite:///{short_dir / 'broker.db'}"
    worker = Worker(url, poll_s=NEVER_S, idle_poll_s=NEVER_S)  # only a wake-up can bring a message in time
    try:
        assert worker.run_until(1, 0.2) == []  # started, and idle
        _send(url, {"ids": ["a"]})
        assert worker.run_until(1) == [{"ids": ["a"]}]
        worker.run_until(2, 1.0)  # idle: nothing comes
        _send(url, {"ids": ["b"]})
        assert worker.run_until(2) == [{"ids": ["a"]}, {"ids": ["b"]}]
    finally:
        worker.close()
    assert list((short_dir / "broker.db.consumers").iterdir()) == [], "a stopped worker removes its socket"


def test_a_worker_no_wake_up_reaches_still_polls(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{short_dir / 'broker.db'}"
    monkeypatch.setattr(EmbeddedTransport, "wake_consumers", lambda _self: None)  # every wake-up is lost
    worker = Worker(url, poll_s=0.02, idle_poll_s=0.2)
    try:
        worker.run_until(1, 0.5)  # idle: its polls back off, to the idle interval at most
        assert 0.02 < worker.transport._pause <= 0.2
        _send(url, {"ids": ["lost wake-up"]})
        assert worker.run_until(1) == [{"ids": ["lost wake-up"]}]
    finally:
        worker.close()
    monkeypatch.setattr(WakeSocket, "bind", classmethod(lambda _cls, _folder: None))  # e.g. a path too long
    worker = Worker(url, poll_s=0.02, idle_poll_s=NEVER_S)
    try:
        worker.run_until(1, 0.3)
        assert worker.transport._pause == 0.02, "no back-off without a socket to be woken through"
        _send(url, {"ids": ["no socket"]})
        assert worker.run_until(1) == [{"ids": ["no socket"]}]
    finally:
        worker.close()


def test_celery_gets_the_idle_interval_only_on_the_embedded_broker() -> None:
    embedded = celery_config(isolated_settings(broker_idle_poll_interval_s=2.5))
    assert embedded["broker_transport_options"]["idle_polling_interval"] == 2.5
    redis = celery_config(isolated_settings(broker_url="redis://localhost:6379/0"))
    assert "idle_polling_interval" not in redis["broker_transport_options"]


def test_a_waiting_request_is_rung_when_its_verdict_is_committed(short_dir: Path, database: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = database.model_copy(update={"broker_url": f"sqla+sqlite:///{short_dir / 'broker.db'}"})
    with session_scope(settings) as session:
        register_model(session, SHIPPED_MODEL, activate=True)
    bell = verdict_bell(settings)
    assert bell is not None
    with session_scope(settings) as session:
        check_id = submit_image(session, distinct_photos(1, size=200)[0], settings).check.id
        session.commit()
    waits: list[int] = []

    def verdict_meanwhile(seen: int, timeout_s: float) -> int:
        """The worker commits the verdict and rings while the request waits."""
        with session_scope(settings) as other:
            check = other.get(Check, check_id)
            assert check is not None
            check.status = CheckStatus.DONE
            other.commit()
        ring_verdicts(settings)
        waits.append(seen)
        return Bell.wait(bell, seen, 30)

    monkeypatch.setattr(bell, "wait", verdict_meanwhile)
    monkeypatch.setattr(backend.checks.service.time, "sleep", lambda _s: pytest.fail("slept instead of listening"))
    with session_scope(settings) as session:
        assert wait_for_final(session, check_id, 30, bell).status == CheckStatus.DONE
    assert len(waits) == 1
