"""What a team watches: Prometheus metrics (all named ``fakewatch_*``) and the request id that ties an API request's
log lines to the worker's.

Counters and the latency histogram live in the process that does the work (the API counts accepted checks, the
worker counts verdicts and fetch failures); the queue depth and the active model are read from the database when
scraped, so every process reports the same figures. The API serves them at ``/metrics`` on its port (no key;
``FAKEWATCH_METRICS_ENABLED=false`` turns it off), each scoring worker on ``FAKEWATCH_WORKER_METRICS_PORT``."""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import Check, ModelVersion
from core.enums import CheckStatus

CHECKS_ACCEPTED = Counter("fakewatch_checks_accepted", "Checks accepted, by how they came in.", ["source"])
VERDICTS = Counter("fakewatch_verdicts", "Checks finished, by verdict (or 'failed').", ["verdict"])
CHECK_LATENCY = Histogram("fakewatch_check_latency_seconds", "From a check's creation to its verdict.",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))
FETCH_FAILURES = Counter("fakewatch_fetch_failures", "Fetches that failed: image URLs, and model files that could "
                                                     "not be fetched or verified.", ["kind"])
LOADED_MODEL = Gauge("fakewatch_loaded_model_version", "The model version this process scores with (1 for the one "
                                                       "loaded).", ["version"])

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("fakewatch_request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"


def new_request_id(given: str | None = None) -> str:
    """The client's own id when it is a sane token, else a fresh one."""
    if given and len(given) <= 64 and given.replace("-", "").replace("_", "").isalnum():
        return given
    return uuid.uuid4().hex


def note_finished(verdict: str, created_at: datetime | None, finished_at: datetime | None) -> None:
    VERDICTS.labels(verdict).inc()
    if created_at is not None and finished_at is not None:
        CHECK_LATENCY.observe(max(0.0, (finished_at - created_at).total_seconds()))


def note_loaded_model(name: str) -> None:
    LOADED_MODEL.clear()
    LOADED_MODEL.labels(name).set(1)


class StateCollector(Collector):
    """Figures read from the database at scrape time: checks waiting and running, and the active version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("fakewatch_queue_depth", "Checks waiting for a worker, and being scored.",
                                  labels=["status"])
        active = GaugeMetricFamily("fakewatch_model_version", "The active model version (1 for the active one).",
                                   labels=["version"])
        try:
            with session_scope(self.settings) as session:
                counts = dict(session.execute(select(Check.status, func.count()).where(
                    Check.status.in_([CheckStatus.QUEUED, CheckStatus.RUNNING])).group_by(Check.status)).all())
                name = session.scalar(select(ModelVersion.name).where(ModelVersion.active.is_(True)))
        except SQLAlchemyError:
            return  # the database is down: the scrape still answers, without these (and the alert says why)
        for status in (CheckStatus.QUEUED, CheckStatus.RUNNING):
            depth.add_metric([status.value], float(counts.get(status, 0)))
        yield depth
        if name is not None:
            active.add_metric([name], 1.0)
            yield active


def state_registry(settings: Settings) -> CollectorRegistry:
    """A registry of the database-backed figures alone, for these settings (the API keeps one per app)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(settings))
    return registry


def register_state(settings: Settings, registry: CollectorRegistry = REGISTRY) -> None:
    """Add the database-backed figures for these settings to the registry (once per process)."""
    if not getattr(registry, "_fakewatch_state", False):
        registry.register(StateCollector(settings))
        registry._fakewatch_state = True  # type: ignore[attr-defined]


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record (``-`` outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage(),
                 "request_id": getattr(record, "request_id", REQUEST_ID.get())}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def install_structured_logs(logger: logging.Logger | None = None) -> None:
    """Log JSON lines carrying the request id. Given a logger (the worker's, as Celery set it up), its handlers
    write JSON; without one, a JSON handler is added to the root logger only if it has none (the API under
    gunicorn), so a host process that set up its own logging keeps it."""
    root = logger or logging.getLogger()
    if logger is None:
        if root.handlers:
            return
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(existing, RequestIdFilter) for existing in handler.filters):
            handler.addFilter(RequestIdFilter())
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
