"""``fakewatch check`` for many files: upload batches (POST /api/v1/batches with multipart ``files``, docs/api.md
"Upload batches") of up to ``--batch-size`` files a request, one request after the other, since a folder is checked
soonest in requests of about 32 files (docs/serving.md "Upload batches"). Each file's answer is the same check
object a single upload gets, read by id once its batch is final, so the command prints exactly what it prints for
files sent one at a time."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from core.enums import BatchStatus
from fakewatch.api_client import ApiClient, ClientError

DEFAULT_BATCH_SIZE = 32
POLL_S = 1.0
BATCHES_PATH = "/api/v1/batches"
# The bar of `fakewatch scan` (client_commands.SCAN_BAR_FORMAT), counting files instead of URLs.
FILES_BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files finished [{elapsed}{postfix}]"


@dataclass
class SentBatch:
    """One request's batch: its id, its state as last read, and which of its files it took."""

    files: list[Path]
    batch: dict[str, Any]
    refused: dict[Path, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return BatchStatus(self.batch["status"]).is_final and not self.batch.get("running")

    @property
    def finished_files(self) -> int:
        """Files of this request that have their answer: refused ones, and every one once the batch is final."""
        if self.finished:
            return len(self.files)
        items = int(self.batch["done"]) + int(self.batch["failed"]) + int(self.batch["cancelled"])
        return len(self.refused) + items


def chunks(files: list[Path], size: int, max_bytes: int) -> Iterator[list[Path]]:
    """Files in order, ``size`` at most a request and under the server's body cap (FAKEWATCH_VIDEO_MAX_BYTES) in
    all; a file alone above it still goes, alone, to be refused for itself."""
    chunk: list[Path] = []
    total = 0
    for path in files:
        size_of = path.stat().st_size
        if chunk and (len(chunk) == size or total + size_of > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(path)
        total += size_of
    if chunk:
        yield chunk


def check_files(client: ApiClient, files: list[Path], batch_size: int, max_bytes: int, wait_s: float,
                stream: TextIO) -> dict[Path, dict[str, Any]]:
    """Each file's check object (or ``{"error": {"code", "message"}}``), sending the files in upload batches and
    drawing the files finished on ``stream``. Waits until every batch is final, or until ``wait_s`` pass without
    one more file finishing."""
    answers: dict[Path, dict[str, Any]] = {}
    sent: list[SentBatch] = []
    with tqdm(total=len(set(files)), unit="file", file=stream, dynamic_ncols=True, bar_format=FILES_BAR_FORMAT,
              postfix="uploading") as bar:
        for chunk in chunks(list(dict.fromkeys(files)), batch_size, max_bytes):
            try:
                sent.append(submit(client, chunk))
            except ClientError as error:
                # The request as a whole was refused (no file accepted, or too large): each file alone, to say
                # for each why, as one at a time would; an API out of reach is out of reach for each file too.
                answers.update({path: {"error": {"code": error.code, "message": error.message}} for path in chunk}
                               if error.code == "unreachable" else check_one_by_one(client, chunk, wait_s))
            bar.n = len(answers) + sum(batch.finished_files for batch in sent)
            bar.refresh()
        bar.set_postfix_str("scoring", refresh=False)
        follow(client, sent, bar, len(answers), wait_s)
    for batch in sent:
        answers.update(read_answers(client, batch))
    return answers


def submit(client: ApiClient, chunk: list[Path]) -> SentBatch:
    handles = [path.open("rb") for path in chunk]
    try:
        fields = [("files", (path.name, handle)) for path, handle in zip(chunk, handles, strict=True)]
        batch: dict[str, Any] = client.request("POST", BATCHES_PATH, files=fields,
                                               data={"name": "fakewatch check"}).json()
    finally:
        for handle in handles:
            handle.close()
    # `invalid` names a refused file by its 1-based position in the request.
    refused = {chunk[item["line"] - 1]: {"error": {"code": item.get("code", "refused"),
                                                   "message": item["reason"]}}
               for item in batch["invalid"]}
    return SentBatch(files=chunk, batch=batch, refused=refused)


def check_one_by_one(client: ApiClient, chunk: list[Path], wait_s: float) -> dict[Path, dict[str, Any]]:
    answers: dict[Path, dict[str, Any]] = {}
    for path in chunk:
        try:
            answers[path] = client.check(str(path), wait_s=wait_s)
        except ClientError as error:
            answers[path] = {"error": {"code": error.code, "message": error.message}}
    return answers


def follow(client: ApiClient, sent: list[SentBatch], bar: tqdm[Any], answered: int, wait_s: float) -> None:
    """Poll the unfinished batches until all are final, or ``wait_s`` pass with no file finishing (each verdict is
    waited for ``wait_s`` at most, as one at a time)."""
    progress = answered + sum(batch.finished_files for batch in sent)
    deadline = time.monotonic() + wait_s
    while any(not batch.finished for batch in sent) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        for batch in sent:
            if not batch.finished:
                batch.batch = client.get_json(f"{BATCHES_PATH}/{batch.batch['id']}")
        now = answered + sum(batch.finished_files for batch in sent)
        if now > progress:
            progress, deadline = now, time.monotonic() + wait_s
        bar.n = now
        bar.refresh()


def read_answers(client: ApiClient, sent: SentBatch) -> dict[Path, dict[str, Any]]:
    """Each file's check, matched by SHA-256 (an upload batch's result rows have an empty url; the same bytes twice
    are one item)."""
    response = client.request("GET", f"{BATCHES_PATH}/{sent.batch['id']}/results",
                              params={"format": "jsonl", "only": "all"})
    check_ids = {row["sha256"]: row["check_id"] for row in map(json.loads, response.text.splitlines())
                 if row.get("row", "item") == "item"}
    answers: dict[Path, dict[str, Any]] = dict(sent.refused)
    for path in sent.files:
        if path in answers:
            continue
        check_id = check_ids.get(hashlib.sha256(path.read_bytes()).hexdigest())
        if check_id is None:
            answers[path] = {"error": {"code": "missing", "message": f"batch {sent.batch['id']} has no item for it"}}
            continue
        answers[path] = client.get_json(f"/api/v1/checks/{check_id}")
    return answers
