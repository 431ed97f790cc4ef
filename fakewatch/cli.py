"""``fakewatch``: run the tool, manage keys and the database, and submit or score images.

The group reads the settings once (``FAKEWATCH_*``, ``.env``) and hands them to every command as its context
object; a test invoking a command passes its own with ``obj=``. TensorFlow and the Celery worker are imported
only inside the commands that need them, so ``fakewatch --help`` answers at once."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta

import click

from admin import cli as admin_cli
from backend.checks.workers import workers_state
from backend.delivery.callbacks import checked_callback_url
from backend.identity.access import Actor
from backend.identity.audit import EventFilters, event_dict, find_events
from backend.identity.keys import create_key, has_keys, list_keys, revoke_key, rotate_secret, set_callback_url
from backend.identity.users import first_run_lines
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.store import MODELS, open_store
from backend.training.versions import active_version, ensure_shipped_model
from core.enums import Role
from core.errors import FakewatchError
from fakewatch import client_commands, hash_commands, score_command, supervision
from models import cli as models_cli

log = logging.getLogger("fakewatch")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log more (to stderr).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """fakewatch: spot deepfake and AI-generated images.

    Start everything on this machine with `fakewatch up`. Settings come from FAKEWATCH_* environment
    variables or a .env file in the working directory (see .env.example).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Alembic narrates every migration step; `fakewatch up` must open with its address lines.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if ctx.obj is None:
        ctx.obj = Settings()


# --- database and keys --------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


def prepare_database(settings: Settings) -> str | None:
    """Migrate to the latest schema and register the shipped model on a fresh database; returns its version name."""
    from backend.storage.migrate import upgrade_database  # noqa: PLC0415 - alembic, only where the schema changes

    upgrade_database(settings.database)
    with session_scope(settings) as session:
        version = ensure_shipped_model(session, open_store(settings, MODELS))
        return version.name if version else None


@db.command("wait")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait before giving up (exit 1).")
@click.pass_obj
def db_wait(settings: Settings, timeout: float) -> None:
    """Wait until another process (the Kubernetes migration Job) has migrated the database to this version's
    schema: what the API's init container runs, so a new API never serves an old schema."""
    from backend.storage.migrate import wait_for_head  # noqa: PLC0415 - alembic, only for this command

    if not wait_for_head(settings.database, timeout):
        raise click.ClickException(f"The database schema is not at this version's head after {timeout:.0f} s: "
                                   "has the migration Job run (`fakewatch db upgrade`)?")
    click.echo("The database schema is up to date.")


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Create or migrate the database to the latest schema, and register the shipped default model."""
    name = prepare_database(settings)
    click.echo(f"Database at {settings.database.split('@')[-1]} is up to date.")
    click.echo(f"Active model: {name}" if name else "No model is active: models/shipped/default.keras is missing.")


@cli.group()
def keys() -> None:
    """API keys for the extension, scripts and the `check`/`scan` commands."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([role.value for role in Role]), default=Role.SUBMITTER.value,
              show_default=True, help="What the key may do (docs/architecture.md, Roles and permissions).")
@click.option("--callback-url", default=None,
              help="Post this key's checks and batches here when they finish, unless a submission names its own.")
@click.pass_obj
def keys_create(settings: Settings, name: str, role: str, callback_url: str | None) -> None:
    """Create a key named NAME: prints its callback-signing secret, then the key alone on the last line."""
    try:
        url = checked_callback_url(callback_url, settings) if callback_url else None
        with session_scope(settings) as session:
            row, key = create_key(session, name, Role(role), actor=Actor.operator(), callback_url=url)
            click.echo(f"Created {row.role} key {row.id} ({row.name}). Keep it now: it cannot be shown again.",
                       err=True)
            click.echo(f"Callback secret: {row.secret}")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error
    click.echo(key)


@keys.command("rotate-secret")
@click.argument("key")
@click.pass_obj
def keys_rotate_secret(settings: Settings, key: str) -> None:
    """Issue a new callback-signing secret for the key with this id or name (printed alone on the last line);
    callbacks sent from now on are signed with it."""
    try:
        with session_scope(settings) as session:
            row, secret = rotate_secret(session, key, actor=Actor.operator())
            click.echo(f"New callback secret for key {row.id} ({row.name}); the old one no longer signs.", err=True)
    except FakewatchError as error:
        raise click.ClickException(error.message) from error
    click.echo(secret)


@keys.command("set-callback")
@click.argument("key")
@click.argument("url", required=False)
@click.pass_obj
def keys_set_callback(settings: Settings, key: str, url: str | None) -> None:
    """Set the default callback URL of the key with this id or name (no URL: clear it)."""
    try:
        checked = checked_callback_url(url, settings) if url else None
        with session_scope(settings) as session:
            row = set_callback_url(session, key, checked, actor=Actor.operator())
            click.echo(f"Key {row.id} ({row.name}) posts to {checked}." if checked
                       else f"Key {row.id} ({row.name}) has no default callback URL.")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error


@keys.command("list")
@click.pass_obj
def keys_list(settings: Settings) -> None:
    """List keys (their prefixes only)."""
    with session_scope(settings) as session:
        for row in list_keys(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            click.echo(f"{row.id}\t{row.name}\t{row.role}\t{row.prefix}...\t{state}\tcreated {row.created_at:%Y-%m-%d %H:%M}")


@keys.command("revoke")
@click.argument("key")
@click.pass_obj
def keys_revoke(settings: Settings, key: str) -> None:
    """Revoke the key with this id or name."""
    try:
        with session_scope(settings) as session:
            row = revoke_key(session, key, actor=Actor.operator())
            click.echo(f"Revoked key {row.id} ({row.name}).")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error


def parse_since(value: str) -> datetime:
    """An ISO 8601 time (UTC when it has no zone) or a span back from now: 30m, 12h, 7d."""
    value = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:].lower() in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1].lower()])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("give an ISO time (2026-12-01T09:00:00Z) or a span such as 30m, 12h, 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@cli.command()
@click.option("--since", default="24h", show_default=True, help="ISO time, or a span back from now (30m, 12h, 7d).")
@click.option("--actor", default=None, help="Only this user's or key's name.")
@click.option("--action", "actions", multiple=True, help="Only these actions (repeatable), e.g. review.label.")
@click.option("--object", "object_ref", default=None, help="Only this object, as TYPE or TYPE:ID (image:<sha256>).")
@click.pass_obj
def audit(settings: Settings, since: str, actor: str | None, actions: tuple[str, ...], object_ref: str | None) -> None:
    """Print the audit trail as JSON lines, oldest first."""
    object_type, _, object_id = (object_ref or "").partition(":")
    filters = EventFilters(actor=actor, actions=actions, object_type=object_type or None, object_id=object_id or None,
                           since=parse_since(since))
    with session_scope(settings) as session:
        for event in reversed(find_events(session, filters, limit=None)):
            click.echo(json.dumps(event_dict(event)))


# --- servers ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default=None, help="Address to listen on (FAKEWATCH_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (FAKEWATCH_API_PORT).")
@click.option("--workers", type=int, default=1, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", type=int, default=16, show_default=True, help="Threads per process.")
@click.pass_obj
def api(settings: Settings, host: str | None, port: int | None, workers: int, threads: int) -> None:
    """Serve the HTTP API with gunicorn (backend/wsgi.py reads the same environment; backend/gunicorn_config.py
    holds the server's settings, keep-alive included)."""
    bind = f"{host or settings.api_host}:{port or settings.api_port}"
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:backend.gunicorn_config",
                               "--bind", bind, "--workers", str(workers), "--threads", str(threads),
                               "backend.wsgi:app"])


@cli.command()
@click.option("--queues", "-Q", default="scoring", show_default=True,
              help="Queues to serve: scoring, training, or both comma-separated.")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (FAKEWATCH_WORKER_CONCURRENCY).")
@click.option("--pool", type=click.Choice(["prefork", "threads"]), default="prefork", show_default=True,
              help="prefork: one task at a time per process (a killed process loses one chunk). threads: several "
                   "tasks in one process, their images scored together (FAKEWATCH_BATCH_BUDGET_MS).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int | None, pool: str, loglevel: str) -> None:
    """Run a Celery worker: scoring (loads the active model when each process starts) or training."""
    # The worker's start-up (worker/app.py) reads the same environment; it imports the task modules.
    from worker.app import start_worker  # noqa: PLC0415 - Celery's worker machinery, only for this command

    sys.exit(start_worker(queues, concurrency or settings.worker_concurrency, pool, loglevel))


def _a_worker_can_score(settings: Settings) -> bool:
    """A scoring worker holds the active model, so the first check is scored at once, not after a model load."""
    with session_scope(settings) as session:
        version = active_version(session)
        return workers_state(session, version.name if version else None).ready > 0


@cli.command()
@click.option("--no-admin", is_flag=True, help="Do not start the admin console.")
@click.pass_obj
def up(settings: Settings, no_admin: bool) -> None:
    """Run everything on this machine: migrate, then the API, a scoring worker, a training worker and the console.

    Uses the embedded default unless FAKEWATCH_DATABASE_URL / FAKEWATCH_BROKER_URL say otherwise.
    Logs go to FAKEWATCH_DATA_DIR/logs/. Ctrl-C stops everything.
    """
    _refuse_taken_ports(settings, no_admin)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    click.echo(f"API: {api_url}")
    if not no_admin:
        click.echo(f"Admin: http://{settings.api_host}:{settings.admin_port}")
    version = prepare_database(settings)
    with session_scope(settings) as session:
        if not has_keys(session):
            row, key = create_key(session, "first key (fakewatch up)", Role.ADMIN,
                                  actor=Actor.system("fakewatch up"))
            click.echo(f"API key: {key}")
            click.echo(f"Callback secret: {row.secret}")
    for line in first_run_lines(settings):
        click.echo(line)
    sys.stdout.flush()
    commands = {"api": ["api"], "worker": ["worker", "--queues", "scoring"],
                "training-worker": ["worker", "--queues", "training", "--concurrency", "1"],
                # Callbacks on their own worker: a slow receiver never holds up scoring.
                "callbacks-worker": ["worker", "--queues", "callbacks", "--concurrency", "2"]}
    if not no_admin:
        commands["admin"] = ["admin"]
    processes = supervision.spawn_all(commands, settings.logs_dir)
    click.echo(f"Model: {version or 'none active'}; logs in {settings.logs_dir}", err=True)
    if supervision.wait_until_ready(api_url, processes, also=lambda: _a_worker_can_score(settings)):
        click.echo("Ready. Press Ctrl-C to stop.", err=True)
    else:
        click.echo(f"Something did not start; see the logs in {settings.logs_dir}.", err=True)
    supervision.supervise(processes, lambda line: click.echo(line, err=True))


def _refuse_taken_ports(settings: Settings, no_admin: bool) -> None:
    """Stop before starting anything when the API's or the console's port is taken: otherwise `up` would report
    Ready while another program answers there."""
    wanted = [("the API", settings.api_port, "FAKEWATCH_API_PORT")]
    if not no_admin:
        wanted.append(("the admin console", settings.admin_port, "FAKEWATCH_ADMIN_PORT"))
    for what, port, setting in wanted:
        if not supervision.port_is_free(settings.api_host, port):
            raise click.ClickException(
                f"Port {port} on {settings.api_host} is already in use by another program, so {what} cannot start "
                f"there. Set {setting} to a free port (or stop the program using {port}).")


# Commands that live beside their own part: the models' train/evaluate/score, the console, the API clients.
# These modules import TensorFlow and Celery only inside their commands, so `fakewatch --help` stays fast.
for _command in [*models_cli.COMMANDS, *admin_cli.COMMANDS, *client_commands.COMMANDS, *hash_commands.COMMANDS,
                 *score_command.COMMANDS]:
    cli.add_command(_command)


def main() -> None:
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN notes) is not news to an operator.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli()


if __name__ == "__main__":
    main()
