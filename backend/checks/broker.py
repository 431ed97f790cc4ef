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
of the loop is how kombu's SQS transport does it; the queries are the same as the blocking loop's."""

from __future__ import annotations

from json import dumps
from queue import Empty
from typing import Any

from kombu.transport import sqlalchemy as kombu_sqlalchemy
from kombu.transport.virtual import Transport as VirtualTransport
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.exc import OperationalError

from backend.storage.db import enable_sqlite_pragmas

TRANSPORT_PATH = "backend.checks.broker:EmbeddedTransport"


class WALChannel(kombu_sqlalchemy.Channel):
    """Every broker message is a transaction: on SQLite, WAL with synchronous=NORMAL makes each commit an append
    instead of a journal rewrite plus fsync (about 5x faster for a batch's hundreds of messages)."""

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
        """Store one message: one INSERT and its commit. kombu's own first looks the queue's row up by name and
        loads it again after the commit that expired it, three statements where one does, for every check the API
        accepts (about half of a publish's CPU)."""
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


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    Channel = WALChannel
    implements = VirtualTransport.implements.extend(asynchronous=True)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Poll the consumed queues every ``polling_interval`` from the worker's event loop."""
        # An interval of 0 (poll without pausing in the blocking loop) must not spin the event loop.
        loop.call_repeatedly(self.polling_interval or 0.01, self.deliver_ready)

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


def broker_connection_url(url: str) -> tuple[str, str | None]:
    """Split an ``sqla+...`` URL into the plain database URL and our transport; other URLs pass through."""
    if url.startswith("sqla+"):
        return url[len("sqla+"):], TRANSPORT_PATH
    return url, None
