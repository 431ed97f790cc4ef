"""`fakewatch admin` (run the console) and `fakewatch users ...` (its moderators)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from backend.identity.access import Actor
from backend.identity.users import create_user, list_users, revoke_user
from backend.settings import Settings
from backend.storage.db import session_scope
from core.enums import USER_ROLES, Role
from core.errors import FakewatchError

# server.py serves app.py with the security headers and the HttpOnly login cookie (admin/web.py).
SERVER = Path(__file__).resolve().parent / "server.py"
MAX_UPLOAD_MB = 20  # MiB, as every size fakewatch writes


def streamlit_command(host: str, port: int) -> list[str]:
    """The console's `streamlit run` line: headless, XSRF protection on, no usage statistics sent anywhere."""
    return [sys.executable, "-m", "streamlit", "run", str(SERVER),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--server.enableXsrfProtection", "true", "--server.enableCORS", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            # URL lists are text: 10,000 URLs are about 1 MiB. (Streamlit counts this setting in MiB.)
            "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--client.toolbarMode", "minimal", "--theme.base", "light"]


@click.command()
@click.option("--host", default=None, help="Address to listen on (FAKEWATCH_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (FAKEWATCH_ADMIN_PORT).")
@click.pass_obj
def admin(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the admin console (Streamlit): review queue, images, batches, dashboard, models."""
    command = streamlit_command(host or settings.api_host, port or settings.admin_port)
    os.execvp(command[0], command)


@click.group()
def users() -> None:
    """Users who log in to the admin console (viewers, moderators, admins)."""


@users.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([role.value for role in USER_ROLES]), default=Role.MODERATOR.value,
              show_default=True, help="viewer: reads; moderator: also labels and retrains; admin: everything.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def users_create(settings: Settings, name: str, role: str, password_stdin: bool) -> None:
    """Create console user NAME; asks for the password (or reads it from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope(settings) as session:
            user = create_user(session, name, password, Role(role), actor=Actor.operator())
            click.echo(f"Created {user.role} {user.name}.")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error


@users.command("revoke")
@click.argument("name")
@click.pass_obj
def users_revoke(settings: Settings, name: str) -> None:
    """Disable console user NAME: they can no longer log in."""
    try:
        with session_scope(settings) as session:
            user = revoke_user(session, name, actor=Actor.operator())
            click.echo(f"Revoked {user.role} {user.name}.")
    except FakewatchError as error:
        raise click.ClickException(error.message) from error


@users.command("list")
@click.pass_obj
def users_list(settings: Settings) -> None:
    """List console users."""
    with session_scope(settings) as session:
        for user in list_users(session):
            state = "active" if user.is_active else "disabled"
            click.echo(f"{user.name}\t{user.role}\t{state}\tcreated {user.created_at:%Y-%m-%d %H:%M}")


COMMANDS = [admin, users]
