"""``fakewatch scan FILE``: submit a file of image URLs (one per line, or a CSV with a ``url`` column) as a batch,
watch its progress, and write every verdict to a CSV or JSON-lines file."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from backend.client import ApiClient, ClientError

RESULT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
POLL_INTERVAL_S = 1.0


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="", help="A name for the batch (default: the file's name).")
@click.option("--wait", is_flag=True, help="Show a live progress bar until every item is finished.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one row per URL to this .csv or .jsonl file once the batch is finished (implies --wait).")
@click.option("--only", type=click.Choice(["all", "flagged", "failed"]), default="all", show_default=True,
              help="Which rows --out writes.")
def scan(file: Path, name: str, wait: bool, out: Path | None, only: str) -> None:
    """Check every image URL in FILE (text with one URL per line, or a .csv with a `url` column).

    Uses the API at FAKEWATCH_API_URL with FAKEWATCH_API_KEY. The batch id is printed alone on stdout's last line.
    """
    fmt = result_format(out) if out else None
    client = ApiClient.from_settings()
    try:
        batch = submit_file(client, file, name or file.name)
        report_accepted(batch)
        if wait or out:
            batch = watch(client, batch)
            click.echo(summary(batch), err=True)
        if out and fmt:
            rows = download_results(client, batch["id"], out, fmt, only)
            click.echo(f"Wrote {rows} rows to {out}", err=True)
    except ClientError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from error
    click.echo(batch["id"])


def result_format(out: Path) -> str:
    fmt = RESULT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise click.BadParameter("end the file name with .csv or .jsonl", param_hint="--out")
    return fmt


def submit_file(client: ApiClient, file: Path, name: str) -> dict[str, Any]:
    with file.open("rb") as handle:
        response = client.request("POST", "/api/v1/batches", files={"file": (file.name, handle)}, data={"name": name})
    batch: dict[str, Any] = response.json()
    return batch


def report_accepted(batch: dict[str, Any]) -> None:
    click.echo(f"Batch {batch['id']}: {batch['total']} URLs queued, {len(batch['invalid'])} invalid lines, "
               f"{batch.get('duplicates', 0)} duplicates folded.", err=True)
    for item in batch["invalid"][:20]:
        click.echo(f"  line {item['line']}: {item['reason']}", err=True)
    if len(batch["invalid"]) > 20:
        click.echo(f"  ... and {len(batch['invalid']) - 20} more invalid lines", err=True)


def watch(client: ApiClient, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll the batch until it is done or cancelled, drawing done / flagged / failed / rate / time left."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    with tqdm(total=batch["total"], unit="url", file=sys.stderr, dynamic_ncols=True,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}") as bar:
        while True:
            finished = batch["done"] + batch["failed"] + batch["cancelled"]
            bar.update(finished - bar.n)
            bar.set_postfix_str(progress_text(batch), refresh=True)
            if batch["status"] in ("done", "cancelled") and not batch.get("running"):
                return batch
            time.sleep(POLL_INTERVAL_S)
            batch = client.get_json(f"/api/v1/batches/{batch['id']}")


def progress_text(batch: dict[str, Any]) -> str:
    rate = batch.get("rate_per_s")
    eta = batch.get("eta_s")
    left = "--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
    return (f"done {batch['done']}, flagged {batch['flagged']}, failed {batch['failed']}, "
            f"{'--' if rate is None else f'{rate:.1f}'}/s, {left} left")


def summary(batch: dict[str, Any]) -> str:
    return (f"Batch {batch['id']} {batch['status']}: {batch['done']} checked ({batch['flagged']} flagged), "
            f"{batch['failed']} failed, {batch['cancelled']} cancelled.")


def download_results(client: ApiClient, batch_id: str, out: Path, fmt: str, only: str) -> int:
    """Stream the results into ``out``; returns the number of rows written."""
    response = client.request("GET", f"/api/v1/batches/{batch_id}/results", params={"format": fmt, "only": only},
                              stream=True)
    lines = 0
    with out.open("wb") as handle:
        for chunk in response.iter_content(chunk_size=64 * 1024):
            handle.write(chunk)
            lines += chunk.count(b"\n")
    return lines - 1 if fmt == "csv" else lines


COMMANDS = [scan]
