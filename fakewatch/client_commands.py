"""The client commands, which work through the API (FAKEWATCH_API_URL with FAKEWATCH_API_KEY) rather than on the
database: ``fakewatch check`` (files and folders in upload batches, URLs one by one), ``fakewatch scan`` (a file of URLs as a batch, with a
live progress bar and the results written out), ``fakewatch retrain`` (a training run, followed epoch by epoch),
``fakewatch review`` (label an image), ``fakewatch models list|promote|rollback`` (choose the active version) and
``fakewatch images delete`` (remove stored images)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click
from tqdm import tqdm

from backend.batches.results import RESULT_FILTERS
from backend.settings import Settings
from backend.training.comparison import comparison_rows
from core.enums import BatchStatus, CheckStatus, Label, RunStatus, Verdict
from core.policy import VERDICT_WORDS
from core.retraining import Comparison
from fakewatch.api_client import ApiClient, ClientError
from fakewatch.check_batches import DEFAULT_BATCH_SIZE, check_files
from fakewatch.file_walk import walk_files
from fakewatch.video_timeline import describe_timeline

RESULT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SCAN_POLL_S = 1.0
RETRAIN_POLL_S = 2.0
CANCEL_POLL_S = 0.5


# --- check --------------------------------------------------------------------------------------------------------


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--jsonl", is_flag=True, help="Print one JSON check object per line.")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for each verdict (in batches: for the next file to finish).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Files per upload batch request (at most the server's FAKEWATCH_BATCH_MAX_FILES); 1 sends each "
                   "file in a request of its own.")
@click.pass_obj
def check(settings: Settings, targets: tuple[str, ...], jsonl: bool, wait_s: float, batch_size: int) -> None:
    """Submit image or video files, folders of them, or URLs to the API (FAKEWATCH_API_URL, FAKEWATCH_API_KEY)
    and print verdicts; a video's verdict comes with its timeline: a sparkline of its frames' scores and where the
    fake ones are.

    Two or more files (every file under a folder counts) go in upload batches of up to --batch-size files a
    request, with a progress bar on stderr while they are scored; a single file and URLs go one at a time. Every
    file's verdict is then printed in the order given, a file the server refuses with its reason. Exits 1 if any
    file or URL could not be checked."""
    client = ApiClient.from_settings(settings)
    expanded = [(str(path) if Path(target).is_dir() else target, path)
                for target in targets for path in walk_files([target])]
    files = [path for target, path in expanded if not is_url(target) and path.is_file()]
    batched = (check_files(client, files, batch_size, settings.max_upload_bytes, wait_s, sys.stderr)
               if batch_size > 1 and len(set(files)) > 1 else {})  # one file: one request either way
    failures = 0
    for target, path in expanded:
        result = batched.get(path) if not is_url(target) else None
        if result is None:
            try:
                result = client.check(target, wait_s=wait_s)
            except ClientError as error:
                result = {"error": {"code": error.code, "message": error.message}}
        failures += "id" not in result  # refused before it became a check, as one at a time counts failures
        click.echo(json.dumps({"target": target, **result}) if jsonl
                   else describe_check(target, result) + describe_timeline(result))
    sys.exit(1 if failures else 0)


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def describe_check(target: str, result: dict[str, Any]) -> str:
    status = result.get("status")
    if result.get("error") and status != CheckStatus.DONE:
        error = result["error"]
        return f"{target}: error {error.get('code')}: {error.get('message')}"
    if status != CheckStatus.DONE:
        return f"{target}: {status} (check {result.get('id')}; not finished yet)"
    if result.get("verdict_source") == "review" and result.get("review"):
        # A moderator's label of these bytes is the verdict (verdict rule 1, docs/architecture.md); the model's
        # score stays shown.
        review_by = result["review"]
        score = "n/a" if result.get("score") is None else f"{result['score']:.3f}"
        return (f"{target}: reviewed {result['verdict']} (by {review_by['by']} at {review_by['at']}; model score "
                f"{score}, model {result['model_version']})")
    review = f", reviewed {result['review']['label']}" if result.get("review") else ""
    source = result.get("verdict_source") or "model"
    evidence = (result.get("provenance") or {}).get("summary") or ""
    if result.get("confidence") is not None:
        decided = f"confidence {result['confidence']:.2f}"
    elif source == "match" and result.get("match"):  # as the console's evidence line says it
        decided = f"by match: {describe_match(result['match'])}"
    else:  # other evidence than the model decided: show it instead of a confidence (docs/architecture.md)
        decided = f"by {source}" + (f": {evidence}" if source == "provenance" and evidence else "")
    shown = f"; provenance: {evidence}" if evidence and not decided.endswith(evidence) else ""
    # The verdict in the words every client shows (core.policy.VERDICT_WORDS): the model finds or misses traces.
    words = f"uncertain: {result['reason']}" if result.get("reason") else VERDICT_WORDS[Verdict(result["verdict"])]
    return (f"{target}: {words} ({decided}, score {result['score']:.3f}, "
            f"model {result['model_version']}{review}{shown})")


def describe_match(match: dict[str, Any]) -> str:
    """A near-copy: how near, of what, and who labelled the original (or that a shared hash list did)."""
    what = (f"image {match['sha256'][:12]}…" if match.get("sha256")
            else f"a listed hash {str(match.get('pdq_hex', ''))[:12]}…")
    by = f" by {match['by']}" if match.get("by") else ""
    at = f" at {match['at']}" if match.get("at") else ""
    return f"near-copy (distance {match.get('distance')}) of {what} labelled {match.get('label')}{by}{at}"


# --- scan ---------------------------------------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="", help="A name for the batch (default: the file's name).")
@click.option("--wait", is_flag=True, help="Show a live progress bar until every item is finished.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one row per URL to this .csv or .jsonl file once the batch is finished (implies --wait).")
@click.option("--only", type=click.Choice(RESULT_FILTERS), default="all", show_default=True,
              help="Which rows --out writes.")
@click.pass_obj
def scan(settings: Settings, file: Path, name: str, wait: bool, out: Path | None, only: str) -> None:
    """Check every image URL in FILE (text with one URL per line, or a .csv with a `url` column).

    Uses the API at FAKEWATCH_API_URL with FAKEWATCH_API_KEY. The batch id is printed alone on stdout's last line.
    """
    fmt = result_format(out) if out else None
    client = ApiClient.from_settings(settings)
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


# One line: the bar and its count (finished items, whatever their outcome) are the only count of progress; the text
# after it says what became of them and how fast. tqdm puts ", " before a postfix, so it follows the elapsed time.
SCAN_BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} finished [{elapsed}{postfix}]"


def watch(client: ApiClient, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll the batch until it is done or cancelled, drawing finished / checked / flagged / failed / rate / time left."""
    with scan_bar(batch, sys.stderr) as bar:
        while True:
            draw(bar, batch)
            if BatchStatus(batch["status"]).is_final and not batch.get("running"):
                return batch
            time.sleep(SCAN_POLL_S)
            batch = client.get_json(f"/api/v1/batches/{batch['id']}")


def scan_bar(batch: dict[str, Any], stream: TextIO) -> tqdm[Any]:
    """The bar, first drawn with this state of the batch (never a frame without its text)."""
    return tqdm(total=batch["total"], initial=finished_count(batch), postfix=progress_text(batch), unit="url",
                file=stream, dynamic_ncols=True, bar_format=SCAN_BAR_FORMAT)


def draw(bar: tqdm[Any], batch: dict[str, Any]) -> None:
    """Draw one poll's state in one refresh: the count and the text change together, never one before the other
    (tqdm's update() alone would draw the new count beside the previous poll's text)."""
    bar.n = finished_count(batch)
    bar.set_postfix_str(progress_text(batch), refresh=False)
    bar.refresh()


def finished_count(batch: dict[str, Any]) -> int:
    """Items that are final, whatever their outcome: what the bar fills with."""
    return int(batch["done"]) + int(batch["failed"]) + int(batch["cancelled"])


def progress_text(batch: dict[str, Any]) -> str:
    """The text after the bar: what became of the finished items, the server's rate and time left."""
    rate = batch.get("rate_per_s")
    eta = batch.get("eta_s")
    left = "--:--:--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
    return (f"{batch['done']} checked, {batch['flagged']} flagged, {batch['failed']} failed, "
            f"{batch['cancelled']} cancelled, {'--' if rate is None else f'{rate:.1f}'}/s, {left} left")


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


# --- retrain ------------------------------------------------------------------------------------------------------


@click.command()
@click.option("--from-scratch", is_flag=True, help="Train a new model instead of fine-tuning the active version.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default FAKEWATCH_TRAINING_EPOCHS).")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; Ctrl-C cancels it.")
@click.pass_obj
def retrain(settings: Settings, from_scratch: bool, epochs: int | None, wait: bool) -> None:
    """Retrain the detector on the base datasets plus every moderator-reviewed image.

    One run at a time; the result is a candidate version to compare and promote in the console."""
    client = ApiClient.from_settings(settings)
    try:
        run = client.request("POST", "/api/v1/training-runs",
                             json={"from_scratch": from_scratch, "epochs": epochs}).json()
    except ClientError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from error
    click.echo(f"Training run {run['id']} queued ({plural(run['epochs'], 'epoch')}, "
               f"{'from scratch' if from_scratch else 'fine-tuning the active version'}).")
    if not wait:
        return
    try:
        run = follow_run(client, run["id"])
    except KeyboardInterrupt:
        report_run(cancel_and_follow(client, run["id"]))
        sys.exit(130)
    report_run(run)
    sys.exit(0 if run["status"] == RunStatus.DONE else 1)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cancel_and_follow(client: ApiClient, run_id: str) -> dict[str, Any]:
    """Ctrl-C while following: cancel the run and follow it to its end (the worker ends it within seconds), so the
    last line says how it ended; a second Ctrl-C stops waiting."""
    client.request("POST", f"/api/v1/training-runs/{run_id}/cancel")
    click.echo("Cancel requested; waiting for the run to stop (Ctrl-C again to stop waiting).", err=True)
    try:
        return follow_run(client, run_id, quiet=True)
    except KeyboardInterrupt:
        sys.exit(130)


def follow_run(client: ApiClient, run_id: str, quiet: bool = False) -> dict[str, Any]:
    """Poll the run, printing each new epoch to stderr (unless quiet), until it ends."""
    shown = 0
    while True:
        run: dict[str, Any] = client.get_json(f"/api/v1/training-runs/{run_id}")
        for entry in [] if quiet else run["history"][shown:]:
            metrics = ", ".join(f"{key} {value:.3f}" for key, value in entry.items() if key != "epoch")
            click.echo(f"epoch {entry['epoch']}/{run['epochs']}: {metrics}", err=True)
        shown = len(run["history"])
        if not RunStatus(run["status"]).is_active:
            return run
        time.sleep(RETRAIN_POLL_S if not quiet else CANCEL_POLL_S)


def report_run(run: dict[str, Any]) -> None:
    if run["status"] != RunStatus.DONE:
        click.echo(f"Training run {run['id']} {run['status']}: {run['error']}")
        return
    click.echo(f"Candidate: {run['candidate']['name']} (not active; compare and promote it in the console)")
    for row in comparison_rows(Comparison.from_dict(run["comparison"]) if run["comparison"] else None):
        click.echo(f"  {row['set']} [{row['images']}] {row['metric']}: active {_metric(row['active'])}"
                   f"{_interval(row['active 95% CI'])}, candidate {_metric(row['candidate'])}"
                   f"{_interval(row['candidate 95% CI'])}")


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(interval: str | None) -> str:
    return f" (95% CI {interval})" if interval else ""


# --- review, models, images -----------------------------------------------------------------------------------------


def _client_call(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    client = ApiClient.from_settings(settings)
    try:
        return client.request(method, path, **kwargs).json()
    except ClientError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from error


@click.command()
@click.argument("sha256")
@click.option("--label", type=click.Choice([label.value for label in Label]), required=True)
@click.option("--reason", default=None, help="A short why (a policy name, say).")
@click.option("--note", default=None, help="Free text for the other moderators.")
@click.option("--check", "check_id", default=None, help="The check the label was given from.")
@click.pass_obj
def review(settings: Settings, sha256: str, label: str, reason: str | None, note: str | None,
           check_id: str | None) -> None:
    """Label the image with this SHA-256 real or fake, as a moderator does in the console (through the API)."""
    body = {"label": label, "reason": reason, "note": note, "check_id": check_id}
    result = _client_call(settings, "POST", f"/api/v1/images/{sha256}/reviews", json=body)
    latest = result["reviews"][0]
    click.echo(f"{sha256}: labelled {latest['label']} by {latest['by']} at {latest['at']}")


@click.group()
def models() -> None:
    """Model versions on the server (through the API): list them, promote one, roll back."""


def describe_version(version: dict[str, Any]) -> str:
    auc = version.get("metrics", {}).get("auc")
    measured = f", AUC {auc:.3f}" if isinstance(auc, int | float) else ""
    return (f"{version['id']}	{version['name']}	{'active' if version['active'] else '-'}	"
            f"{version['architecture']}{measured}	created {version['created_at']}")


@models.command("list")
@click.pass_obj
def models_list(settings: Settings) -> None:
    """List model versions, newest first: id, name, whether active."""
    for version in _client_call(settings, "GET", "/api/v1/model-versions")["versions"]:
        click.echo(describe_version(version))


@models.command("promote")
@click.argument("version_id", type=int)
@click.option("--reason", default=None, help="Why to promote although the promotion guard refuses (admins).")
@click.pass_obj
def models_promote(settings: Settings, version_id: int, reason: str | None) -> None:
    """Make the version with this id the active one, through the promotion guard."""
    body = {"reason": reason} if reason else {}
    version = _client_call(settings, "POST", f"/api/v1/model-versions/{version_id}/promote", json=body)
    click.echo(f"{version['name']} is active.")


@models.command("rollback")
@click.pass_obj
def models_rollback(settings: Settings) -> None:
    """Make the version active before the current one active again."""
    version = _client_call(settings, "POST", "/api/v1/model-versions/rollback")
    click.echo(f"{version['name']} is active again.")


@click.group()
def images() -> None:
    """Stored images on the server (through the API)."""


@images.command("delete")
@click.argument("sha256s", nargs=-1, required=True)
@click.option("--purge", is_flag=True, help="Also remove the PDQ hash and labels (kept by default for matching).")
@click.pass_obj
def images_delete(settings: Settings, sha256s: tuple[str, ...], purge: bool) -> None:
    """Delete the stored images with these SHA-256s: bytes and derived files go, their checks stay (marked)."""
    client = ApiClient.from_settings(settings)
    failures = 0
    for sha256 in sha256s:
        try:
            result = client.request("DELETE", f"/api/v1/images/{sha256}", params={"purge": str(purge).lower()}).json()
        except ClientError as error:
            failures += 1
            click.echo(f"{sha256}: {error.code}: {error.message}", err=True)
            continue
        click.echo(f"{sha256}: deleted ({result['checks']} checks kept{', purged' if result['purged'] else ''})")
    sys.exit(1 if failures else 0)


COMMANDS = [check, scan, retrain, review, models, images]
