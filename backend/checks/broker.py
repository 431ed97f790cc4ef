"""The embedded default's broker: kombu's SQLAlchemy transport, on a SQLite file in WAL mode.

Its polling interval comes from the ``polling_interval`` transport option (backend/checks/dispatch.py sets it from the
settings), which kombu's virtual transports read themselves; the SQLAlchemy channel would hand every transport
option to ``create_engine``, which rejects unknown keywords, so the channel here makes its engine without them.

The transport also runs in Celery's event loop, as Redis does. kombu's SQLAlchemy transport declares that it cannot,
and Celery then runs a worker with its blocking loop and billiard's blocking pool, whose processes all read tasks
from one shared pipe under one shared lock. An idle pool process waits on that pipe holding the lock; SIGKILLed
there (the OOM killer, an operator), it never releases it, and every other pool process, the ones started in its
place included, waits for the lock forever: the worker stops scoring without a word in its log while the sweeper
re-sends the same checks (seen in ``benchmarks/serving.py``'s kill run). In the event loop Celery uses its
asynchronous pool instead: a pipe per process, a lost process's task failed as ``WorkerLostError`` (redelivered,
``task_reject_on_worker_lost``) and a new process that takes work at once. Polling the queue from a repeating timer
of the loop is how kombu's SQS transport does it; the queries are the same as the blocking loop's.

Polls alone made a message wait half the interval on average and an idle worker spend CPU looking, so a producer on
this machine also wakes the workers once its message is committed (a datagram to each worker's socket in the folder
``wake_folder`` names: backend/checks/wakeups.py), and a worker polls as a fallback: every ``polling_interval`` while
it has work, backing off to ``idle_polling_interval`` while its queues stay empty. docs/serving.md ("Waking the
worker") has the whole of it."""

from __future__ import annotations

import time
from json import dumps
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import sqlalchemy as kombu_sqlalchemy
from kombu.transport.virtual import Transport as VirtualTransport
from sqlalchemy import Engine, create_engine, event, insert, make_url
from sqlalchemy.exc import OperationalError

from backend.checks.wakeups import Bell, WakeSocket, bell, wake_all
from backend.settings import Settings
from backend.storage.db import enable_sqlite_pragmas

TRANSPORT_PATH = "backend.checks.broker:EmbeddedTransport"


class WALChannel(kombu_sqlalchemy.Channel):
    """Every broker message is a transaction: on SQLite, WAL with synchronous=NORMAL makes each commit an append
    instead of a journal rewrite plus fsync (about 5x faster for a batch's hundreds of messages)."""

    connection: EmbeddedTransport

    def _engine_from_config(self) -> Engine:
        client = self.connection.client
        assert client is not None
        engine = create_engine(str(client.hostname))
        if engine.url.get_backend_name() == "sqlite":
            event.listen(engine, "connect", enable_sqlite_pragmas)
        return engine

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._queue_ids: dict[str, int] = {}  # a queue's row is never deleted: its id is read once per channel
        super().__init__(connection, **kwargs)

    # kombu's two base classes name the second argument differently (message, payload); callers pass it by position.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        """Store one message: one INSERT and its commit, then wake this machine's workers. kombu's own first looks
        the queue's row up by name and loads it again after the commit that expired it, three statements where one
        does, for every check the API accepts (about half of a publish's CPU)."""
        if queue not in self._queue_ids:
            self._queue_ids[queue] = self._get_or_create(queue).id
        try:
            self.session.execute(insert(self.message_cls.__table__).values(payload=dumps(payload),
                                                                           queue_id=self._queue_ids[queue]))
            self.session.commit()
        except OperationalError:
            # As kombu's own: the publish fails (and is retried, or the checks are flagged unsent) rather than
            # reporting a message that was never stored.
            self.session.rollback()
            raise
        # Stored and committed: wake the workers on this machine to fetch it now.
        self.connection.wake_consumers()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """A finished task frees a place under the prefetch limit: fetch the next message now, not at the next
        poll (a batch's tasks would otherwise each wait for one)."""
        super().basic_ack(delivery_tag, multiple)
        self.connection.poll_soon()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self.connection.poll_soon()


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    Channel = WALChannel
    implements = VirtualTransport.implements.extend(asynchronous=True)
    # The longest pause between two polls of an idle queue, when wake-ups reach this worker (transport option).
    idle_polling_interval = 1.0

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.idle_polling_interval = client.transport_options.get("idle_polling_interval",
                                                                  self.idle_polling_interval)
        self.wake_folder = wake_folder(str(client.hostname), "consumers")
        self._loop: Any = None
        self._wakes: WakeSocket | None = None
        self._pause = 0.0
        self._next_poll = 0.0

    def wake_consumers(self) -> None:
        if self.wake_folder is not None:
            wake_all(self.wake_folder)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Poll the consumed queues from the worker's event loop: at once when a producer on this machine sends a
        wake-up (or a task ends), every ``polling_interval`` while there is work, and, when wake-ups reach this
        worker, less and less often while the queues stay empty, up to ``idle_polling_interval``."""
        self._loop = loop
        self._pause = self.fast_interval
        if self.wake_folder is not None and self._wakes is None:
            self._wakes = WakeSocket.bind(self.wake_folder)
            if self._wakes is not None:
                loop.add_reader(self._wakes, self._on_wake)
        loop.call_repeatedly(self.fast_interval, self._tick)
        loop.call_soon(self.poll)

    @property
    def fast_interval(self) -> float:
        # An interval of 0 (poll without pausing in the blocking loop) must not spin the event loop.
        return self.polling_interval or 0.01

    def _tick(self) -> None:
        if time.monotonic() >= self._next_poll:
            self.poll()

    def _on_wake(self) -> None:
        assert self._wakes is not None
        self._wakes.drain()
        self.poll()

    def poll_soon(self) -> None:
        if self._loop is not None:
            self._loop.call_soon(self.poll)

    def poll(self) -> int:
        """Deliver what is waiting, and choose when to look again. Returns how many messages were delivered."""
        delivered = self.deliver_ready()
        if delivered or self._wakes is None or self._waiting_for_a_task():
            self._pause = self.fast_interval
        else:  # nothing there: a producer's wake-up will say when there is
            self._pause = min(self._pause * 2, max(self.idle_polling_interval, self.fast_interval))
        self._next_poll = time.monotonic() + self._pause
        return delivered

    def _waiting_for_a_task(self) -> bool:
        """Whether every consuming channel is at its prefetch limit (so nothing was read: the queue may be full)."""
        consuming = [channel for channel in self.channels if channel._consumers]
        return bool(consuming) and not any(channel.qos.can_consume() for channel in consuming)

    def deliver_ready(self) -> int:
        """Hand the consumer every message waiting now that its prefetch limit allows (one query each, none once a
        queue is empty or the limit is reached); never sleeps. Returns how many."""
        delivered = 0
        cycle = self.cycle
        assert cycle is not None  # made in __init__; kombu types it optional for close_connection
        while True:
            try:
                cycle.get(self._deliver)
            except Empty:
                return delivered
            delivered += 1

    def close_connection(self, connection: Any) -> None:
        if self._wakes is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._wakes.fileno())
            self._wakes.close()
            self._wakes = None
        super().close_connection(connection)


def wake_folder(url: str, who: str) -> Path | None:
    """Where the processes of an embedded broker on a SQLite file keep their wake-up sockets (backend/checks/
    wakeups.py), one folder beside the file for each ``who``: "consumers" (workers waiting for messages), "waiters"
    (API requests waiting for verdicts). None for any other broker: its processes may be on other machines, and
    poll as they always did."""
    url = url.removeprefix("sqla+")
    database = make_url(url).database if url.startswith("sqlite") else None
    if database in (None, "", ":memory:"):
        return None
    return Path(f"{database}.{who}")


def verdict_bell(settings: Settings) -> Bell | None:
    """What an API request waiting for a check's verdict (``?wait=``) listens to: the scoring workers ring it when
    they commit verdicts (``ring_verdicts``). Only on the embedded broker."""
    folder = wake_folder(settings.broker, "waiters")
    return bell(folder) if folder is not None else None


def ring_verdicts(settings: Settings) -> None:
    """Tell the API requests waiting on this machine that verdicts were committed (a no-op off the embedded
    broker)."""
    folder = wake_folder(settings.broker, "waiters")
    if folder is not None:
        wake_all(folder)


def broker_connection_url(url: str) -> tuple[str, str | None]:
    """Split an ``sqla+...`` URL into the plain database URL and our transport; other URLs pass through."""
    if url.startswith("sqla+"):
        return url[len("sqla+"):], TRANSPORT_PATH
    return url, None
