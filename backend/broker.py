"""The embedded default's broker: kombu's SQLAlchemy transport, polled faster.

kombu's virtual transports poll an idle queue once a second, so a single check on the embedded default
would wait up to a second before a worker saw it. The polling interval cannot be passed through
``broker_transport_options`` (the SQLAlchemy transport hands those to ``create_engine``, which rejects
unknown keywords), so it is set on a subclass instead."""

from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqlalchemy

from backend.settings import get_settings

TRANSPORT_PATH = "backend.broker:PollingSQLTransport"


class PollingSQLTransport(kombu_sqlalchemy.Transport):
    polling_interval = get_settings().broker_poll_interval_s


def broker_connection_url(url: str) -> tuple[str, str | None]:
    """Split an ``sqla+...`` URL into the plain database URL and our transport; other URLs pass through."""
    if url.startswith("sqla+"):
        return url[len("sqla+"):], TRANSPORT_PATH
    return url, None
