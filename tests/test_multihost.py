"""Fakewatch across hosts that share nothing but a network: a services host (its own PostgreSQL, Redis and
SeaweedFS), two API hosts, two worker hosts and a console host, each a network namespace with its own empty
working folder, on a private test subnet this test builds and removes (tests/netns.py).

It proves: a check submitted to an API host is scored on a worker host; a model promoted from the console host is
used by both worker hosts within seconds; an idempotent replay sent to the other API host answers with the same
check; a login throttled through one host is throttled on the other; an image labelled through one API host is
matched by a near-copy submitted to the other; a worker host killed in the middle of a batch loses nothing.

Where the machine does not allow network namespaces this test fails and says so: it never skips."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import requests
from PIL import Image as PILImage
from sqlalchemy import select

from backend.identity.keys import create_key
from backend.identity.logins import log_in
from backend.identity.users import create_user
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import Batch, Check, ModelVersion
from backend.storage.store import MODELS, open_store
from backend.training.versions import promote_version, register_model
from core.enums import Role
from core.errors import FakewatchError
from testbed.images import distinct_photos
from testbed.models import copy_exported_files
from testbed.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, wait_for_bucket, weed_command
from testbed.stack import isolated_settings
from tests.actors import OPERATOR
from tests.netns import NamespacesUnavailable, PrivateNetwork, build_network, call, kill_group

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
HOSTS = {"services": 1, "api1": 11, "api2": 12, "worker1": 21, "worker2": 22, "console": 31}
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
API_PORT, IMAGES_PORT, PG_PORT, REDIS_PORT = 8000, 8080, 5432, 6379
WEED_PORTS = [9333, 8081, 8888, 8333, 8111, 8181, 9101]


@dataclass
class Fleet:
    network: PrivateNetwork
    root: Path
    console: ThreadPoolExecutor
    settings: Settings  # the console host's: what the test itself uses from there
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    key: str = ""

    def api(self, host: str) -> str:
        return f"http://{self.network.address(host)}:{API_PORT}"

    def on_console(self, function: Callable[..., T], *args: Any, timeout: float = 60) -> T:
        return call(self.console, function, *args, timeout=timeout)

    def log(self, host: str) -> str:
        path = self.root / host / "host.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_until(condition: Callable[[], T | None], timeout: float, what: str, fleet: Fleet | None = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    logs = "\n".join(f"--- {host}\n{fleet.log(host)[-2500:]}" for host in HOSTS) if fleet else ""
    raise AssertionError(f"{what}: not within {timeout} s\n{logs}")


def host_dir(root: Path, host: str) -> Path:
    folder = root / host
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_services(network: PrivateNetwork, root: Path) -> dict[str, str]:
    """PostgreSQL, Redis, SeaweedFS and a plain HTTP server of test images, all on the services host."""
    if not PG_BIN:
        raise RuntimeError("PostgreSQL's server binaries are missing under /usr/lib/postgresql/*/bin")
    address, folder = network.address("services"), host_dir(root, "services")
    pgdata = folder / "pgdata"
    pgdata.mkdir()
    shutil.chown(pgdata, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN[-1] / "initdb"), "-D", str(pgdata), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
    with (pgdata / "pg_hba.conf").open("a") as hba:  # initdb trusts only loopback: the fleet's subnet too
        hba.write(f"host all all {network.subnet}.0/24 trust\n")
    env = {"PATH": os.environ["PATH"]}
    network.start("services", ["runuser", "-u", "postgres", "--", str(PG_BIN[-1] / "postgres"), "-D", str(pgdata),
                               "-k", str(pgdata), "-c", f"listen_addresses={address}", "-p", str(PG_PORT),
                               "-c", "fsync=off", "-c", "max_connections=200"], env, folder, folder / "postgres.log")
    network.start("services", ["redis-server", "--bind", address, "--port", str(REDIS_PORT), "--save", "",
                               "--appendonly", "no", "--protected-mode", "no"], env, folder, folder / "redis.log")
    weed = folder / "weed"
    weed.mkdir()
    network.start("services", weed_command(weed, address, WEED_PORTS), env, folder, folder / "weed.log")
    images = folder / "images"
    images.mkdir()
    network.start("services", [sys.executable, "-m", "http.server", str(IMAGES_PORT), "--bind", address,
                               "--directory", str(images)], env, folder, folder / "http.log")
    return {"FAKEWATCH_DATABASE_URL": f"postgresql+psycopg://postgres@{address}:{PG_PORT}/fakewatch",
            "FAKEWATCH_BROKER_URL": f"redis://{address}:{REDIS_PORT}/0",
            "FAKEWATCH_IMAGE_STORE": f"s3://{BUCKET}/fleet", "FAKEWATCH_S3_ENDPOINT_URL": f"http://{address}:8333",
            "FAKEWATCH_S3_ACCESS_KEY_ID": ACCESS_KEY, "FAKEWATCH_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "FAKEWATCH_S3_REGION": "us-east-1"}


def prepare_services(env: dict[str, str], weed_log: Path) -> None:
    """From the console host: the database (once PostgreSQL answers) and the bucket (once SeaweedFS does)."""
    admin = env["FAKEWATCH_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(f"{admin}/postgres", autocommit=True, connect_timeout=2) as connection:
                connection.execute("CREATE DATABASE fakewatch")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    import boto3  # noqa: PLC0415

    client = boto3.client("s3", endpoint_url=env["FAKEWATCH_S3_ENDPOINT_URL"], aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    wait_for_bucket(client, 60, lambda: True, lambda: weed_log.read_text(errors="replace"))


def version_copy(model: Path, folder: Path, name: str) -> Path:
    """The tiny model under another version name (a second version to promote)."""
    folder.mkdir(parents=True)
    shutil.copy(model, folder / "model.keras")
    copy_exported_files(model, folder)
    metadata = json.loads(model.with_suffix(".json").read_text())
    metadata.update(name=name)
    metadata.pop("sha256", None)
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder / "model.keras"


@pytest.fixture(scope="module")
def fleet(tiny_model_path: Path) -> Iterator[Fleet]:
    try:
        network = build_network(HOSTS)
    except NamespacesUnavailable as error:
        pytest.fail(f"This machine does not allow the network namespaces the multi-host test needs: {error}. "
                    "Run the tests as root on Linux with iproute2 (`ip netns`).", pytrace=False)
    # Not under pytest's tmp folder: PostgreSQL runs as its own user and must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="fakewatch-fleet-"))
    os.chmod(root, 0o755)
    try:
        yield _start_fleet(network, root, tiny_model_path)
    finally:
        network.remove()
        shutil.rmtree(root, ignore_errors=True)


def _start_fleet(network: PrivateNetwork, root: Path, model: Path) -> Fleet:
    services = start_services(network, root)
    env = {**services, "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(root),
           "FAKEWATCH_FETCH_ALLOWLIST": f"{network.subnet}.0/24:{IMAGES_PORT}", "FAKEWATCH_LEASE_S": "3",
           "FAKEWATCH_SWEEP_INTERVAL_S": "1", "FAKEWATCH_STUCK_AFTER_S": "6", "FAKEWATCH_SCORE_BATCH_SIZE": "4",
           "FAKEWATCH_RATE_LIMIT": "100000 per minute", "FAKEWATCH_MATCH_RELOAD_S": "600",
           "FAKEWATCH_LOGIN_DELAY_AFTER_FAILURES": "2", "FAKEWATCH_LOGIN_DELAY_BASE_S": "30"}
    console_settings = isolated_settings(data_dir=host_dir(root, "console") / "var", **{
        key.removeprefix("FAKEWATCH_").lower(): value for key, value in env.items() if key.startswith("FAKEWATCH_")})
    fleet = Fleet(network, root, network.on("console"), console_settings, env, {})
    fleet.on_console(prepare_services, env, root / "services" / "weed.log", timeout=90)
    fleet.on_console(upgrade_database, console_settings.database)

    def register_first() -> str:
        with session_scope(console_settings) as session:
            register_model(session, model, activate=True, store=open_store(console_settings, MODELS))
            _key, plain = create_key(session, "fleet", Role.ADMIN, actor=OPERATOR)
            create_user(session, "moderator", "a long enough password", Role.MODERATOR, actor=OPERATOR)
            session.commit()
            return plain

    fleet.key = fleet.on_console(register_first)
    for host in ("api1", "api2"):
        fleet.processes[host] = network.start(host, [
            sys.executable, "-m", "gunicorn", "-c", "python:backend.gunicorn_config", "--bind",
            f"{network.address(host)}:{API_PORT}", "--workers", "1", "--threads", "8", "backend.wsgi:app"],
            {**env, "FAKEWATCH_DATA_DIR": str(host_dir(root, host) / "var")}, root / host, root / host / "host.log")
    for host in ("worker1", "worker2"):
        fleet.processes[host] = network.start(host, [
            sys.executable, "-m", "fakewatch.cli", "worker", "--concurrency", "1"],
            {**env, "FAKEWATCH_DATA_DIR": str(host_dir(root, host) / "var"), "FAKEWATCH_WORKER_METRICS_PORT": "9108",
             "FAKEWATCH_WORKER_METRICS_HOST": network.address(host)}, root / host, root / host / "host.log")
    for host in ("api1", "api2"):
        url = fleet.api(host)
        wait_until(functools.partial(fleet.on_console, _ready, url), 90, f"{host} ready", fleet)
    for host in ("worker1", "worker2"):
        wait_until(functools.partial(_logged, fleet, host, "loaded and warm"), 120, f"{host} warm", fleet)
    return fleet


def _logged(fleet: Fleet, host: str, text: str) -> bool:
    return text in fleet.log(host)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _upload(fleet: Fleet, host: str, data: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    def post() -> dict[str, Any]:
        response = requests.post(f"{fleet.api(host)}/api/v1/checks", timeout=20,
                                 headers={"Authorization": f"Bearer {fleet.key}", **(headers or {})},
                                 files={"image": ("x.jpg", io.BytesIO(data), "image/jpeg")})
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        body["_request_id"] = response.headers.get("X-Request-ID")
        return body
    return fleet.on_console(post)


def _check_rows(fleet: Fleet, ids: list[str]) -> list[Check]:
    def read() -> list[Check]:
        with session_scope(fleet.settings) as session:
            rows = list(session.scalars(select(Check).where(Check.id.in_(ids))))
            for row in rows:
                session.expunge(row)
            return rows
    return fleet.on_console(read)


def _done(fleet: Fleet, ids: list[str]) -> list[Check] | None:
    rows = _check_rows(fleet, ids)
    return rows if len(rows) == len(ids) and all(row.status.is_final for row in rows) else None


def _version_name(fleet: Fleet, version_id: int | None) -> str:
    def read() -> str:
        with session_scope(fleet.settings) as session:
            version = session.get(ModelVersion, version_id)
            return version.name if version else ""
    return fleet.on_console(read)


def _host(row: Check) -> str:
    return (row.claimed_by or "").split(":")[0]


def test_a_fleet_that_shares_nothing_but_the_network(fleet: Fleet, tiny_model_path: Path, tmp_path: Path) -> None:
    photos = iter(distinct_photos(60, size=96))

    # A check submitted to an API host is scored on a worker host, its request id in that worker's log.
    first = _upload(fleet, "api1", next(photos))
    [scored] = wait_until(lambda: _done(fleet, [first["id"]]), 30, "first check scored", fleet)
    assert scored.status.value == "done" and _host(scored) in {"worker1", "worker2"}
    wait_until(lambda: first["_request_id"] in fleet.log(_host(scored)), 10, "request id in the worker's log", fleet)

    # A model promoted from the console host is used by both worker hosts within seconds.
    two = version_copy(tiny_model_path, tmp_path / "v2", "tiny-v2")

    def register_and_promote() -> float:
        with session_scope(fleet.settings) as session:
            version = register_model(session, two, store=open_store(fleet.settings, MODELS))
            promote_version(session, version.id, fleet.settings, actor=OPERATOR,
                            override_reason="the multi-host test promotes it")
            session.commit()
        return time.monotonic()

    promoted_at = fleet.on_console(register_and_promote)
    scored_with_v2: set[str] = set()
    submitted: list[str] = []
    while scored_with_v2 != {"worker1", "worker2"}:
        assert time.monotonic() - promoted_at < 30, f"only {scored_with_v2} used the new model\n{fleet.log('worker1')}"
        submitted += [_upload(fleet, host, next(photos))["id"] for host in ("api1", "api2")]
        for row in _check_rows(fleet, submitted):
            if row.status.is_final and _version_name(fleet, row.model_version_id) == "tiny-v2":
                scored_with_v2.add(_host(row))
        time.sleep(0.5)
    promotion_s = time.monotonic() - promoted_at
    assert promotion_s < 30

    # Each worker host serves its metrics: the version it holds now, and the verdicts it gave.
    for host in ("worker1", "worker2"):
        url = f"http://{fleet.network.address(host)}:9108/metrics"
        text = fleet.on_console(lambda url=url: requests.get(url, timeout=10).text)
        assert 'fakewatch_loaded_model_version{version="tiny-v2"} 1.0' in text, text[-2000:]
        assert "fakewatch_verdicts_total{" in text and 'fakewatch_queue_depth{status="queued"}' in text
    api_metrics = fleet.on_console(lambda: requests.get(f"{fleet.api('api1')}/metrics", timeout=10).text)
    assert 'fakewatch_checks_accepted_total{source="upload"}' in api_metrics

    # An idempotent replay sent to the other API host answers with the same check.
    replayed = next(photos)
    key = {"Idempotency-Key": "fleet-replay-1"}
    assert _upload(fleet, "api1", replayed, key)["id"] == _upload(fleet, "api2", replayed, key)["id"]

    # A login throttled through one host is throttled on the other (the failures are in the shared database).
    def fail_login(host_settings: Settings) -> str:
        with session_scope(host_settings) as session:
            try:
                log_in(session, host_settings, "moderator", "wrong password", address="10.0.0.9")
            except FakewatchError as error:
                return error.code
        return "logged in"

    on_api1 = fleet.network.on("api1")
    assert [call(on_api1, fail_login, fleet.settings) for _ in range(2)] == ["unauthorized"] * 2
    assert call(fleet.network.on("api2"), fail_login, fleet.settings) == "rate_limited"

    # An image labelled through one API host is matched by a near-copy submitted to the other.
    original = next(photos)
    labelled = _upload(fleet, "api1", original)
    wait_until(lambda: _done(fleet, [labelled["id"]]), 30, "labelled image scored", fleet)
    sha = labelled["image"]["sha256"]
    review = fleet.on_console(lambda: requests.post(
        f"{fleet.api('api1')}/api/v1/images/{sha}/reviews", json={"label": "fake"}, timeout=10,
        headers={"Authorization": f"Bearer {fleet.key}"}))
    assert review.status_code == 201, review.text
    copy = _upload(fleet, "api2", _near_copy(original))
    [matched] = wait_until(lambda: _done(fleet, [copy["id"]]), 30, "near-copy scored", fleet)
    assert matched.match and matched.match.get("label") == "fake", matched.match

    # A worker host killed in the middle of a batch loses nothing: the other finishes its items.
    images = fleet.root / "services" / "images"
    for index in range(24):
        (images / f"{index}.jpg").write_bytes(next(photos) if index < 20 else distinct_photos(1, size=80 + index)[0])
    urls = "\n".join(f"http://{fleet.network.address('services')}:{8080}/{index}.jpg" for index in range(24))
    batch = fleet.on_console(lambda: requests.post(
        f"{fleet.api('api2')}/api/v1/batches", data=urls, timeout=20,
        headers={"Authorization": f"Bearer {fleet.key}", "Content-Type": "text/plain"}).json())
    ids = _batch_checks(fleet, batch["id"])
    wait_until(lambda: any(_host(row) == "worker1" for row in _check_rows(fleet, ids)), 30, "worker1 took items")
    kill_group(fleet.processes["worker1"])
    rows = wait_until(lambda: _done(fleet, ids), 60, "batch finished after the kill", fleet)
    assert all(row.status.value == "done" for row in rows), [(row.status, row.error_code) for row in rows]
    assert any(_host(row) == "worker2" for row in rows)


def _batch_checks(fleet: Fleet, batch_id: str) -> list[str]:
    def read() -> list[str]:
        with session_scope(fleet.settings) as session:
            assert session.get(Batch, batch_id) is not None
            return list(session.scalars(select(Check.id).where(Check.batch_id == batch_id)))
    return fleet.on_console(read)


def _near_copy(data: bytes) -> bytes:
    image = PILImage.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width - 6, image.height - 6)).save(out, "JPEG", quality=70)
    return out.getvalue()
