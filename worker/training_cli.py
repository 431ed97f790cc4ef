"""`fakewatch retrain`: start a training run through the API (FAKEWATCH_API_URL, FAKEWATCH_API_KEY) and, with
--wait, follow it epoch by epoch. The candidate it produces is promoted from the console, never from here."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

POLL_S = 2.0


@click.command()
@click.option("--from-scratch", is_flag=True, help="Train a new model instead of fine-tuning the active version.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default FAKEWATCH_TRAINING_EPOCHS).")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; Ctrl-C cancels it.")
def retrain(from_scratch: bool, epochs: int | None, wait: bool) -> None:
    """Retrain the detector on the base datasets plus every moderator-reviewed image.

    One run at a time; the result is a candidate version to compare and promote in the console."""
    from backend.client import ApiClient, ClientError

    client = ApiClient.from_settings()
    try:
        run = client.request("POST", "/api/v1/training-runs",
                             json={"from_scratch": from_scratch, "epochs": epochs}).json()
    except ClientError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from error
    click.echo(f"Training run {run['id']} queued ({run['epochs']} epochs, "
               f"{'from scratch' if from_scratch else 'fine-tuning the active version'}).")
    if not wait:
        return
    try:
        run = _follow(client, run["id"])
    except KeyboardInterrupt:
        client.request("POST", f"/api/v1/training-runs/{run['id']}/cancel")
        click.echo("Cancel requested; the run stops after its current batch.", err=True)
        sys.exit(130)
    _report(run)
    sys.exit(0 if run["status"] == "done" else 1)


def _follow(client: Any, run_id: str) -> dict[str, Any]:
    """Poll the run, printing each new epoch to stderr, until it ends."""
    shown = 0
    while True:
        run: dict[str, Any] = client.get_json(f"/api/v1/training-runs/{run_id}")
        for entry in run["history"][shown:]:
            metrics = ", ".join(f"{key} {value:.3f}" for key, value in entry.items() if key != "epoch")
            click.echo(f"epoch {entry['epoch']}/{run['epochs']}: {metrics}", err=True)
        shown = len(run["history"])
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(POLL_S)


def _report(run: dict[str, Any]) -> None:
    if run["status"] != "done":
        click.echo(f"Training run {run['id']} {run['status']}: {run['error']}")
        return
    click.echo(f"Candidate: {run['candidate']['name']} (not active; compare and promote it in the console)")
    from backend.training import comparison_rows

    for row in comparison_rows(run["comparison"]):
        click.echo(f"  {row['set']} [{row['images']}] {row['metric']}: active {_fmt(row['active'])}, "
                   f"candidate {_fmt(row['candidate'])}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


COMMANDS = [retrain]
