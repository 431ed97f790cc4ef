"""A running fakewatch for tests and benchmarks: a real API (gunicorn) and a real Celery worker as subprocesses,
on either the embedded default (SQLite + SQLAlchemy broker) or production services (PostgreSQL + Redis).

Started once per test session per backend (see the ``stack`` fixtures in tests/conftest.py) because starting a
worker costs seconds (TensorFlow and the model load)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from sqlalchemy.orm import Session

from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.training.versions import register_model
from core.enums import CheckStatus

POSTGRES_ADMIN_URL = os.environ.get("FAKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FAKEWATCH_TEST_REDIS", "redis://127.0.0.1:6379")


class _IsolatedSettings(Settings):
    """Settings from the values given and the defaults only."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def isolated_settings(**values: Any) -> Settings:
    """Settings made of these values and the defaults, never of this process's ``FAKEWATCH_*`` variables or a
    ``.env`` file: what tests hand to the entry points (``create_app``, the console, the CLI's ``obj``)."""
    return _IsolatedSettings(**values)


def ephemeral_port_range() -> str:
    """The kernel's range for port-0 binds (where every test server lands), as an allow-list port range: no
    database or admin server listens there, so allow-listing it never opens PostgreSQL's or Redis's port."""
    try:
        first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except OSError:
        first, last = "32768", "60999"
    return f"{first}-{last}"


def local_allowlist(host: str = "127.0.0.1") -> str:
    """An allow-list entry for the test servers on ``host`` (FAKEWATCH_FETCH_ALLOWLIST takes ports: an entry
    without one allows only 80 and 443)."""
    return f"{host}:{ephemeral_port_range()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_url(url: str, process: subprocess.Popen[Any], log: Callable[[], str], timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail early, with the end of the log, if ``process`` exits or time runs
    out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}:\n{log()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 in {timeout} s:\n{log()[-4000:]}")


def create_postgres_database() -> str:
    """A fresh PostgreSQL database for this test session; fails (never skips) when PostgreSQL is down."""
    name = f"fakewatch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_redis_url() -> str:
    """A Redis database index of its own, emptied; fails (never skips) when Redis is down."""
    index = 5 + (os.getpid() % 10)
    url = f"{REDIS_URL}/{index}"
    redis.Redis.from_url(url, socket_connect_timeout=5).flushdb()
    return url


def backend_env(kind: str, data_dir: Path) -> dict[str, str]:
    env = {"FAKEWATCH_DATA_DIR": str(data_dir), "FAKEWATCH_FETCH_ALLOWLIST": local_allowlist(),
           # Short enough that tests see the sweeper work, long enough that slow CI never trips it needlessly.
           "FAKEWATCH_STUCK_AFTER_S": "8", "FAKEWATCH_SWEEP_INTERVAL_S": "1", "FAKEWATCH_LEASE_S": "5",
           "FAKEWATCH_RATE_LIMIT": "100000 per minute",
           # Callback retries a test can wait for (the default spreads them over 84 minutes).
           "FAKEWATCH_CALLBACK_RETRY_DELAYS_S": "0.5,0.5,0.5"}
    if kind == "redis-postgres":
        env["FAKEWATCH_DATABASE_URL"] = create_postgres_database()
        env["FAKEWATCH_BROKER_URL"] = fresh_redis_url()
    return env


@dataclass
class Stack:
    """One running API + scoring worker, and how to reach them."""

    kind: str
    env: dict[str, str]
    data_dir: Path
    api_key: str = ""
    api_url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        """This stack's settings (what its processes read from their environment), for calling services in the
        test process against its database, files and broker."""
        return isolated_settings(**{key.removeprefix("FAKEWATCH_").lower(): value for key, value in self.env.items()
                                    if key.startswith("FAKEWATCH_")})

    def run_cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fakewatch.cli", *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, check=check, timeout=timeout)

    def start_process(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", *args], env={**os.environ, **self.env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker", *extra: str, warm: bool = True) -> subprocess.Popen[bytes]:
        """Start a worker and wait until it is ready and, for a scoring worker (``warm``), until its process has
        loaded the active model and traced its graph, so a test's first check does not wait behind that."""
        process = self.start_process(name, "worker", "--concurrency", "1", *extra)
        self.wait_for_log(name, "ready.", timeout=120)
        if warm:
            self.wait_for_log(name, "loaded and warm", timeout=120)
        return process

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_text(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text(name):
                return
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_text(name)[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not log {needle!r} in {timeout} s:\n{self.log_text(name)[-4000:]}")

    def start_api(self) -> None:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        process = self.start_process("api", "api", "--port", str(port), "--threads", "8")
        wait_for_url(self.api_url + "/healthz", process, lambda: self.log_text("api"))

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def post_image(self, data: bytes, wait: float = 10, **fields: str) -> requests.Response:
        return requests.post(f"{self.api_url}/api/v1/checks", params={"wait": wait}, headers=self.headers(),
                             files={"image": ("image.jpg", data)}, data=fields, timeout=60)

    def get_check(self, check_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.api_url}/api/v1/checks/{check_id}", headers=self.headers(), timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for_check(self, check_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            check = self.get_check(check_id)
            if CheckStatus(check["status"]).is_final or time.monotonic() > deadline:
                return check
            time.sleep(0.1)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session on this stack's database, for seeding and asserting through the services."""
        with session_scope(self.settings) as session:
            yield session

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)
        get_engine(self.settings.database).dispose()
        if self.kind == "redis-postgres":
            drop_postgres_database(self.env["FAKEWATCH_DATABASE_URL"])


def start_stack(kind: str, data_dir: Path, model_path: Path) -> Stack:
    """Migrate, register ``model_path`` as the active model, create a key, start the API, one scoring worker and
    the callbacks worker."""
    stack = Stack(kind=kind, env=backend_env(kind, data_dir), data_dir=data_dir)
    stack.run_cli("db", "upgrade")
    with stack.session() as session:
        register_model(session, model_path, activate=True)
    stack.api_key = stack.run_cli("keys", "create", "tests", "--role", "admin").stdout.strip().splitlines()[-1]
    stack.start_api()
    stack.start_worker()
    stack.start_worker("callbacks-worker", "--queues", "callbacks", warm=False)
    return stack


class OwnRedis:
    """A redis-server of this test's own on a free port, which tests may stop and start again (never the machine's
    Redis on 6379). Without ``persist`` a restart starts empty, as after a crash without an append-only file; with
    it, Redis keeps an append-only file as the compose file's does."""

    def __init__(self, data_dir: Path, persist: bool = False) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "yes" if self.persist else "no",
                                         "--dir", str(self.data_dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_connect_timeout=2)
