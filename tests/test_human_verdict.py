"""A human decision is the verdict (docs/architecture.md, verdict rule 1), end to end on the running stack: after a
moderator labels an image, the next check of the same bytes, the batch export and the CLI all say so, and a
relabel or an undo changes what later reads return. (The extension's badge: tests/test_extension.py.)"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import requests

from backend.moderation.reviews import label_image, undo_last_decision
from backend.storage.schema import Check
from core.enums import Verdict
from core.policy import VERDICT_WORDS
from testbed.images import LocalServer, distinct_photos
from testbed.stack import Stack
from tests.actors import as_user
from tests.test_batches import wait_for_batch

MODERATOR = "mona"


def _image_id(stack: Stack, check_id: str) -> int:
    with stack.session() as session:
        check = session.get(Check, check_id)
        assert check is not None and check.image_id is not None
        return check.image_id


def _export(stack: Stack, batch_id: str, only: str = "all") -> list[dict[str, str]]:
    response = requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}/results", headers=stack.headers(),
                            params={"format": "csv", "only": only}, timeout=30)
    response.raise_for_status()
    return list(csv.DictReader(io.StringIO(response.text)))


def _cli_check(stack: Stack, path: Path) -> str:
    env = {**os.environ, **stack.env, "FAKEWATCH_API_URL": stack.api_url, "FAKEWATCH_API_KEY": stack.api_key}
    done = subprocess.run([sys.executable, "-m", "fakewatch.cli", "check", str(path)], check=False, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_a_label_relabel_and_undo_decide_every_later_read(stack: Stack, image_server: LocalServer,
                                                          tmp_path: Path) -> None:
    """On both backends: the export's review lookup is SQL of its own."""
    photos = distinct_photos(2, size=112)
    for index, data in enumerate(photos):
        image_server.routes[f"/human/{index}.jpg"] = (200, {"Content-Type": "image/jpeg"}, data)
    created = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(),
                            json={"urls": [image_server.url(f"/human/{n}.jpg") for n in range(2)]}, timeout=30)
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    assert wait_for_batch(stack, batch_id)["done"] == 2
    before = _export(stack, batch_id)
    assert [row["verdict_source"] for row in before] == ["model", "model"] and all(row["confidence"] for row in before)
    first = stack.wait_for_check(stack.post_image(photos[0], wait=10).json()["id"])
    assert first["verdict_source"] == "model" and first["review"] is None
    path = tmp_path / "photo.jpg"
    path.write_bytes(photos[0])
    assert f"{path}: {VERDICT_WORDS[Verdict(first['verdict'])]} (confidence" in _cli_check(stack, path)

    image_id = _image_id(stack, first["id"])
    for label in ("real", "fake"):  # a label, then a relabel: the newest one decides
        with stack.session() as session:
            label_image(session, image_id, label, as_user(MODERATOR))
        again = stack.post_image(photos[0], wait=10).json()  # the next check of the same bytes
        assert (again["verdict"], again["verdict_source"], again["confidence"]) == (label, "review", None)
        assert again["flagged"] is (label == "fake") and again["score"] == first["score"]  # the score stays shown
        assert stack.get_check(first["id"])["verdict"] == label  # and every earlier check of them
        [row] = [row for row in _export(stack, batch_id) if row["sha256"] == first["image"]["sha256"]]
        assert (row["verdict"], row["verdict_source"], row["review"], row["confidence"]) == (label, "review", label, "")
        flagged = {row["sha256"] for row in _export(stack, batch_id, "flagged")}
        assert (first["image"]["sha256"] in flagged) is (label == "fake")
        # The batch's summary counts flagged items by the same rule as the export (a review wins), whichever way
        # scoring flagged these bytes.
        summary = requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}", headers=stack.headers(), timeout=30)
        assert summary.json()["flagged"] == len(_export(stack, batch_id, "flagged")), summary.json()
        line = _cli_check(stack, path)
        assert line.startswith(f"{path}: reviewed {label} (by {MODERATOR} at ") and "model score" in line

    with stack.session() as session:
        undo_last_decision(session, as_user(MODERATOR))  # takes back the relabel: the first label decides again
    assert stack.get_check(first["id"])["verdict"] == "real"
    with stack.session() as session:
        undo_last_decision(session, as_user(MODERATOR))
    after = stack.get_check(first["id"])
    assert (after["verdict"], after["verdict_source"], after["review"]) == (first["verdict"], "model", None)
    assert [row["verdict_source"] for row in _export(stack, batch_id)] == ["model", "model"]
