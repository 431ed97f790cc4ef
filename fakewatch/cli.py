"""``fakewatch``: run the tool, manage keys and the database, and submit or score images.

Heavy imports (TensorFlow, Celery worker internals) happen inside the commands that need them, so
``fakewatch --help`` answers at once."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from admin import cli as admin_cli
from backend import batch_cli
from backend.settings import get_settings
from models import cli as models_cli
from worker import training_cli

log = logging.getLogger("fakewatch")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log more (to stderr).")
def cli(verbose: bool) -> None:
    """fakewatch: spot deepfake and AI-generated images.

    Start everything on this machine with `fakewatch up`. Settings come from FAKEWATCH_* environment
    variables or a .env file in the working directory (see .env.example).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Alembic narrates every migration step; `fakewatch up` must open with its address lines.
        logging.getLogger("alembic").setLevel(logging.WARNING)


# --- database and keys --------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


def prepare_database() -> str | None:
    """Migrate to the latest schema and register the shipped model on a fresh database; returns its version name."""
    from backend.db import session_scope
    from backend.migrate import upgrade_database
    from backend.model_versions import ensure_shipped_model

    upgrade_database()
    with session_scope() as session:
        version = ensure_shipped_model(session)
        return version.name if version else None


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the latest schema, and register the shipped default model."""
    name = prepare_database()
    click.echo(f"Database at {get_settings().database.split('@')[-1]} is up to date.")
    click.echo(f"Active model: {name}" if name else "No model is active: models/shipped/default.keras is missing.")


@cli.group()
def keys() -> None:
    """API keys for the extension, scripts and the `check`/`scan` commands."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create a key named NAME; the key is printed once, alone on the last line."""
    from backend.db import session_scope
    from backend.keys import create_key

    with session_scope() as session:
        row, key = create_key(session, name)
        click.echo(f"Created key {row.id} ({row.name}). Keep it now: it cannot be shown again.", err=True)
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys (their prefixes only)."""
    from backend.db import session_scope
    from backend.keys import list_keys

    with session_scope() as session:
        for row in list_keys(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            click.echo(f"{row.id}\t{row.name}\t{row.prefix}...\t{state}\tcreated {row.created_at:%Y-%m-%d %H:%M}")


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke the key with this id or name."""
    from backend.db import session_scope
    from backend.errors import FakewatchError
    from backend.keys import revoke_key

    try:
        with session_scope() as session:
            row = revoke_key(session, key)
            click.echo(f"Revoked key {row.id} ({row.name}).")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error


# --- servers ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default=None, help="Address to listen on (FAKEWATCH_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (FAKEWATCH_API_PORT).")
@click.option("--workers", type=int, default=1, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", type=int, default=8, show_default=True, help="Threads per process.")
def api(host: str | None, port: int | None, workers: int, threads: int) -> None:
    """Serve the HTTP API with gunicorn."""
    settings = get_settings()
    bind = f"{host or settings.api_host}:{port or settings.api_port}"
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
                               "--threads", str(threads), "--worker-class", "gthread", "--timeout", "60",
                               "--access-logfile", "-", "backend.wsgi:app"])


@cli.command()
@click.option("--queues", "-Q", default="scoring", show_default=True,
              help="Queues to serve: scoring, training, or both comma-separated.")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (FAKEWATCH_WORKER_CONCURRENCY).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker: scoring (loads the active model once per process) or training."""
    from worker.app import celery_app

    name = f"{queues.replace(',', '+')}@%h-{os.getpid()}"
    celery_app.worker_main(["worker", "--queues", queues, "--loglevel", loglevel, "--hostname", name,
                            "--concurrency", str(concurrency or get_settings().worker_concurrency)])


def _wait_until_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 180) -> bool:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


@cli.command()
@click.option("--no-admin", is_flag=True, help="Do not start the admin console.")
def up(no_admin: bool) -> None:
    """Run everything on this machine: migrate, then the API, a scoring worker, a training worker and the console.

    Uses the embedded default unless FAKEWATCH_DATABASE_URL / FAKEWATCH_BROKER_URL say otherwise.
    Logs go to FAKEWATCH_DATA_DIR/logs/. Ctrl-C stops everything.
    """
    from backend.db import session_scope
    from backend.keys import create_key, has_keys
    from backend.users import first_run_lines

    settings = get_settings()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    click.echo(f"API: {api_url}")
    if not no_admin:
        click.echo(f"Admin: http://{settings.api_host}:{settings.admin_port}")
    version = prepare_database()
    with session_scope() as session:
        if not has_keys(session):
            _, key = create_key(session, "first key (fakewatch up)")
            click.echo(f"API key: {key}")
    for line in first_run_lines():
        click.echo(line)
    sys.stdout.flush()
    commands = {"api": ["api"], "worker": ["worker", "--queues", "scoring"],
                "training-worker": ["worker", "--queues", "training", "--concurrency", "1"]}
    if not no_admin:
        commands["admin"] = ["admin"]
    processes = [_spawn(name, args, settings.logs_dir) for name, args in commands.items()]
    click.echo(f"Model: {version or 'none active'}; logs in {settings.logs_dir}", err=True)
    if _wait_until_ready(api_url, processes):
        click.echo("Ready. Press Ctrl-C to stop.", err=True)
    else:
        click.echo(f"Something did not start; see the logs in {settings.logs_dir}.", err=True)
    _supervise(processes)


def _spawn(name: str, args: list[str], logs_dir: Path) -> subprocess.Popen[bytes]:
    log_file = (logs_dir / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "fakewatch.cli", *args], stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _supervise(processes: list[subprocess.Popen[bytes]]) -> None:
    def stop(*_args: object) -> None:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        click.echo("Stopped.", err=True)
        sys.exit(0)

    # Installed explicitly: a shell that starts `fakewatch up` in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while True:
        for process in processes:
            if process.poll() is not None:
                click.echo(f"A process exited with code {process.returncode}: {' '.join(process.args)}; "
                           "see its log.", err=True)
                stop()
        time.sleep(1)


# --- client commands --------------------------------------------------------------------------------------


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--jsonl", is_flag=True, help="Print one JSON check object per line.")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True, help="Seconds to wait for each verdict.")
def check(targets: tuple[str, ...], jsonl: bool, wait_s: float) -> None:
    """Submit image files or URLs to the API (FAKEWATCH_API_URL, FAKEWATCH_API_KEY) and print verdicts."""
    from backend.client import ApiClient, ClientError

    client = ApiClient.from_settings()
    failures = 0
    for target in targets:
        try:
            result = client.check(target, wait_s=wait_s)
        except ClientError as error:
            failures += 1
            result = {"target": target, "error": {"code": error.code, "message": error.message}}
        click.echo(json.dumps({"target": target, **result}) if jsonl else _describe(target, result))
    sys.exit(1 if failures else 0)


def _describe(target: str, result: dict) -> str:  # type: ignore[type-arg]
    if result.get("error") and result.get("status") != "done":
        error = result["error"]
        return f"{target}: error {error.get('code')}: {error.get('message')}"
    if result.get("status") != "done":
        return f"{target}: {result.get('status')} (check {result.get('id')}; not finished yet)"
    review = f", reviewed {result['review']['label']}" if result.get("review") else ""
    return (f"{target}: {result['verdict']} (confidence {result['confidence']:.2f}, score {result['score']:.3f}, "
            f"model {result['model_version']}{review})")


# Commands that live beside their own part: the models' train/evaluate/score, scan, the console, retrain.
# These modules import TensorFlow and Celery only inside their commands, so `fakewatch --help` stays fast.
for _command in [*models_cli.COMMANDS, *batch_cli.COMMANDS, *admin_cli.COMMANDS, *training_cli.COMMANDS]:
    cli.add_command(_command)


def main() -> None:
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN notes) is not news to an operator.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli()


if __name__ == "__main__":
    main()
