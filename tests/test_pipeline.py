"""End to end: a real API (gunicorn) and a real Celery worker scoring with a real Keras model, on the embedded
default and on PostgreSQL + Redis."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests
from sqlalchemy import select

from backend.checks.dispatch import SCORE_TASK, SCORING_QUEUE, FakewatchCelery
from backend.checks.service import submit_image
from backend.storage.schema import Check
from testbed.images import LocalServer, distinct_photos, photo_bytes
from testbed.stack import Stack


def test_uploaded_photo_gets_a_stored_verdict(stack: Stack) -> None:
    # A size no other test sends, so these bytes are new to the session's shared stack (not a cached score).
    data = photo_bytes("astronaut", size=508)
    response = stack.post_image(data, wait=10, page_url="https://example.org/page")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done"
    assert body["verdict"] in ("real", "fake", "uncertain")
    assert 0.0 <= body["score"] <= 1.0
    assert body["flagged"] == (body["verdict"] != "real")
    assert body["cached"] is False
    assert body["image"]["width"] == 508 and body["image"]["format"] == "JPEG"
    assert body["model_version"] and body["page_url"] == "https://example.org/page"
    with stack.session() as session:
        row = session.get(Check, body["id"])
        assert row is not None and row.status == "done" and row.score == body["score"]
        assert row.model_version is not None and row.model_version.name == body["model_version"]
    assert stack.get_check(body["id"])["score"] == body["score"]


def test_a_scored_check_carries_its_verdict_source_and_the_regions_behind_its_score(stack: Stack) -> None:
    body = stack.wait_for_check(stack.post_image(photo_bytes("chelsea"), wait=10).json()["id"])
    assert body["status"] == "done" and body["verdict_source"] == "model"
    assert body["provenance"] == {"c2pa": None, "signals": [], "summary": ""} and body["match"] is None
    width, height = body["image"]["width"], body["image"]["height"]
    regions = body["regions"]
    assert len(regions) >= 16
    covered: set[tuple[int, int]] = set()
    for region in regions:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and 0.0 <= region["score"] <= 1.0
        covered.update((x, y) for x in range(x0, x1, 8) for y in range(y0, y1, 8))
    # The crops reach from edge to edge, with gaps under a third of a crop: most of the picture is under one.
    assert min(r["box"][0] for r in regions) == 0 and max(r["box"][2] for r in regions) == width
    assert min(r["box"][1] for r in regions) == 0 and max(r["box"][3] for r in regions) == height
    assert len(covered) / len(range(0, width, 8)) / len(range(0, height, 8)) > 0.65
    # The image's score is the pooled crops' (their mean logit, so it lies between the crop scores).
    scores = [region["score"] for region in regions]
    assert min(scores) - 1e-6 <= body["score"] <= max(scores) + 1e-6


def test_same_bytes_again_are_answered_from_cache(stack: Stack) -> None:
    data = photo_bytes("coffee")
    first = stack.post_image(data, wait=10).json()
    assert first["status"] == "done" and first["cached"] is False
    again = stack.post_image(data, wait=0)
    assert again.status_code == 200
    assert again.json()["cached"] is True and again.json()["score"] == first["score"]
    assert again.json()["id"] != first["id"]
    assert again.json()["regions"] == first["regions"]  # the cached answer keeps its heat map


def test_url_served_locally_is_fetched_and_scored(stack: Stack, image_server: LocalServer) -> None:
    image_server.routes["/rocket.png"] = (200, {"Content-Type": "image/png"}, photo_bytes("rocket", "PNG"))
    url = image_server.url("/rocket.png")
    response = requests.post(f"{stack.api_url}/api/v1/checks?wait=10", headers=stack.headers(),
                             json={"url": url, "page_url": "https://example.org/"}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done" and body["source"] == "url" and body["source_url"] == url
    assert body["image"]["format"] == "PNG"


def test_a_url_that_fails_when_fetched_is_a_failed_check(stack: Stack, image_server: LocalServer) -> None:
    """The deliberate change of issue 11: a single URL check is fetched by a worker, so what goes wrong with the
    URL itself (404, not an image, a redirect to a refused address) ends the check failed, with the reason, and
    ``wait`` returns it like any final check."""
    image_server.routes["/single/page.html"] = (200, {"Content-Type": "text/html"}, b"<!doctype html><p>hi</p>")
    image_server.routes["/single/away.jpg"] = (302, {"Location": f"http://127.0.0.2:{image_server.port}/x.jpg"}, b"")
    expected = {"/single/missing.jpg": ("fetch_failed", "404"), "/single/page.html": ("unsupported_format", "HTML"),
                "/single/away.jpg": ("blocked_address", "loopback")}
    for path, (code, said) in expected.items():
        response = requests.post(f"{stack.api_url}/api/v1/checks?wait=10", headers=stack.headers(),
                                 json={"url": image_server.url(path)}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["error"]["code"]) == ("failed", code), body
        assert said in body["error"]["message"] and body["verdict"] is None and body["image"] is None


def test_refused_url_is_a_clear_error(stack: Stack, image_server: LocalServer) -> None:
    # 127.0.0.2 is loopback but not on the allow-list: refused before any connection is made.
    response = requests.post(f"{stack.api_url}/api/v1/checks", headers=stack.headers(),
                             json={"url": f"http://127.0.0.2:{image_server.port}/x.jpg"}, timeout=30)
    assert response.status_code in (400, 403)
    assert response.json()["error"]["code"] == "blocked_address"


def test_stored_image_can_be_downloaded(stack: Stack) -> None:
    data = photo_bytes("chelsea")
    body = stack.post_image(data, wait=10).json()
    response = requests.get(f"{stack.api_url}/api/v1/images/{body['image']['sha256']}", headers=stack.headers(), timeout=30)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Type"] == "image/jpeg"


def test_ready_when_database_broker_and_model_are(stack: Stack) -> None:
    response = requests.get(f"{stack.api_url}/readyz", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


def test_a_killed_workers_checks_are_requeued_within_20_s_and_finished_by_the_live_one(stack: Stack) -> None:
    """Two workers; SIGKILL the one holding a chunk mid-task. Its lease lapses and the live worker's sweeper
    re-queues the checks within 20 s of the kill (lease 5 s and sweeps every second here; 10 s and 5 s by
    default), the live worker finishes them, and nothing is lost."""
    stack.start_worker("worker-2")
    photos = distinct_photos(150, size=400)
    with stack.session() as session:
        ids = [submit_image(session, data, stack.settings).check.id for data in photos]
        session.commit()
    sender = FakewatchCelery(stack.settings)
    sender.send_task(SCORE_TASK, args=[ids], queue=SCORING_QUEUE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with stack.session() as session:
            rows = list(session.scalars(select(Check).where(Check.id.in_(ids))))
        if all(row.status == "running" for row in rows):
            break
        time.sleep(0.02)
    assert {row.status for row in rows} == {"running"}, "one worker should hold every check of the chunk"
    (holder,) = {row.claimed_by for row in rows}
    assert holder is not None
    holder_group = os.getpgid(int(holder.rsplit(":", 1)[1]))
    victim = next(name for name in ("worker", "worker-2") if stack.processes[name].pid == holder_group)
    survivor = "worker-2" if victim == "worker" else "worker"
    killed_at = time.monotonic()
    stack.stop_process(victim, signal.SIGKILL)
    requeued_after = None
    deadline = killed_at + 120
    while time.monotonic() < deadline:
        with stack.session() as session:
            rows = list(session.scalars(select(Check).where(Check.id.in_(ids))))
        if requeued_after is None and not any(row.claimed_by == holder and row.status == "running" for row in rows):
            requeued_after = time.monotonic() - killed_at
        if all(row.status == "done" for row in rows):
            break
        time.sleep(0.2)
    assert {row.status for row in rows} == {"done"}
    assert requeued_after is not None and requeued_after <= 20, f"re-queued {requeued_after} s after the kill"
    assert all(row.attempts >= 2 and row.claimed_by != holder for row in rows), "each was claimed again elsewhere"
    # The survivor serves as the stack's worker from here on.
    stack.processes["worker"] = stack.processes.pop(survivor)


def test_a_worker_stops_cleanly_on_sigterm(stack: Stack) -> None:
    """SIGTERM to a worker's whole process group (what a supervisor or `docker stop` may send): the main process
    and its pool children all exit, promptly, without SIGKILL."""
    process = stack.start_worker("worker-stopping", warm=False)
    group = process.pid
    os.killpg(group, signal.SIGTERM)
    started = time.monotonic()
    try:
        process.wait(timeout=40)
    finally:
        stack.stop_process("worker-stopping", signal.SIGKILL)
    assert time.monotonic() - started < 40
    deadline = time.monotonic() + 10
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(group), "no pool child outlives the worker"


def _group_alive(group: int) -> bool:
    """Whether any process of this group still runs (a zombie awaiting its reaper does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False
