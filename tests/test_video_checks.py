"""Video checks end to end: clips and animations uploaded (field `image` or `file`), fetched from a URL and in a
batch, scored frame by frame by a real worker with a real model; the hostile corpus refused at intake with its code
or contained, and the worker serving on afterwards. The worker-side limits run through the worker's own scoring
function with tight settings."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.checks.service import get_check, submit_image
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion
from core.policy import clip_score
from testbed.images import LocalServer, photo_bytes
from testbed.stack import Stack
from tests.fixtures_videos import (
    audio_only,
    claims_huge_frames,
    fake_ftyp,
    make_animation,
    make_clip,
    not_a_video,
    tagged_clip,
)
from worker.scoring import score_checks


def assert_video_check(body: dict[str, Any], duration: float, frames: int) -> None:
    assert body["status"] == "done", body
    assert body["media"] == "video" and body["duration_s"] == pytest.approx(duration, abs=0.15)
    assert len(body["frames"]) == frames
    times = [frame["time_s"] for frame in body["frames"]]
    assert times == sorted(times) and times[0] == 0.0
    for frame in body["frames"]:
        assert 0.0 <= frame["score"] <= 1.0 and frame["verdict"] in ("real", "fake", "uncertain")
        assert frame["regions"] and all(0 <= r["box"][0] < r["box"][2] <= body["image"]["width"] for r in frame["regions"])
    # The clip's score is the rule's, from its frames, never the first frame's.
    assert body["score"] == pytest.approx(clip_score([frame["score"] for frame in body["frames"]]), abs=1e-3)


@pytest.mark.parametrize(("kind", "field"), [("h264-mp4", "image"), ("vp9-webm", "file"), ("h264-mov", "image")])
def test_an_uploaded_clip_is_scored_frame_by_frame(stack: Stack, kind: str, field: str) -> None:
    data = make_clip(kind, seconds=3.0, fps=10, width=160 + len(stack.api_url) % 8 * 2)
    response = requests.post(f"{stack.api_url}/api/v1/checks", params={"wait": 20}, headers=stack.headers(),
                             files={field: ("clip.bin", data)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_video_check(body, 3.0, 4)  # 0, 1, 2 s and the scene cut
    assert body["image"]["format"] == {"h264-mp4": "MP4", "vp9-webm": "WEBM", "h264-mov": "MOV"}[kind]
    download = requests.get(f"{stack.api_url}/api/v1/images/{body['image']['sha256']}", headers=stack.headers(),
                            timeout=30)
    assert download.content == data and download.headers["Content-Type"].startswith("video/")
    again = stack.post_image(data, wait=0).json()  # the same bytes again: cached, frames and all
    assert again["cached"] is True and again["frames"] == body["frames"]


def test_an_animated_gif_is_a_video_not_its_first_frame(stack: Stack) -> None:
    body = stack.post_image(make_animation("GIF", frames=25, size=96 + len(stack.api_url) % 4), wait=20).json()
    assert_video_check(body, 2.5, len(body["frames"]))
    assert len(body["frames"]) >= 3


def test_a_generator_named_in_the_clips_tags_decides_before_the_model(stack: Stack) -> None:
    body = stack.post_image(tagged_clip("Google Veo 3", seconds=1.0, width=112), wait=20).json()
    assert body["status"] == "done" and body["media"] == "video"
    assert (body["verdict"], body["verdict_source"]) == ("fake", "provenance")
    assert "Google Veo 3" in body["provenance"]["summary"] or body["provenance"]["signals"][0]["says"] == "ai"
    assert body["frames"]  # the model still scored every sampled frame


def test_hostile_files_are_refused_at_intake_and_the_worker_serves_on(stack: Stack) -> None:
    refused = {"huge header": (claims_huge_frames(), "invalid_video"), "empty": (b"", "invalid_image"),
               "audio only": (audio_only(), "no_video_stream"), "html named .mp4": (not_a_video(), "unsupported_format"),
               "broken ftyp": (fake_ftyp(), "invalid_video"),
               "truncated mp4": (make_clip()[:3000], "invalid_video")}
    for name, (data, code) in refused.items():
        response = stack.post_image(data, wait=0)
        assert 400 <= response.status_code < 500, name
        assert response.json()["error"]["code"] == code, (name, response.text)
        if code == "unsupported_format":  # the caller may send a still or a clip: the message names both
            assert "image or video" in response.json()["error"]["message"] and "MP4" in response.text, response.text
    webm = make_clip("vp9-webm", seconds=3.0, width=144)
    truncated = stack.post_image(webm[: len(webm) * 2 // 3], wait=20).json()  # contained: the frames before the cut
    assert truncated["status"] == "done" and 1 <= len(truncated["frames"]) <= 2
    # And a whole clip afterwards is scored as ever: the worker that met them is still serving.
    assert_video_check(stack.post_image(make_clip("h264-mkv", seconds=2.0, width=176), wait=20).json(), 2.0, 2)


def test_video_urls_in_single_checks_and_batches_with_per_frame_export(stack: Stack, image_server: LocalServer) -> None:
    image_server.routes["/v/clip.mp4"] = (200, {"Content-Type": "video/mp4"}, make_clip(seconds=2.0, width=208))
    image_server.routes["/v/anim.webp"] = (200, {"Content-Type": "image/webp"}, make_animation("WEBP", size=80))
    single = requests.post(f"{stack.api_url}/api/v1/checks?wait=20", headers=stack.headers(),
                           json={"url": image_server.url("/v/clip.mp4")}, timeout=60).json()
    assert_video_check(single, 2.0, 2)  # 0 and 1 s (the scene cut falls on 1 s)
    urls = [image_server.url("/v/clip.mp4"), image_server.url("/v/anim.webp")]
    batch = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), json={"urls": urls},
                          timeout=60).json()
    for _ in range(300):
        status = requests.get(f"{stack.api_url}/api/v1/batches/{batch['id']}", headers=stack.headers(), timeout=30)
        if status.json()["status"] == "done":
            break
        time.sleep(0.2)
    exported = requests.get(f"{stack.api_url}/api/v1/batches/{batch['id']}/results", params={"format": "csv"},
                            headers=stack.headers(), timeout=30).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    items = [row for row in rows if row["row"] == "item"]
    frames = [row for row in rows if row["row"] == "frame"]
    assert [row["media"] for row in items] == ["video", "video"] and all(row["status"] == "done" for row in items)
    assert len(frames) >= 4 and {row["url"] for row in frames} == set(urls)
    assert all(float(row["frame_score"]) >= 0 and row["frame_verdict"] for row in frames)
    lines = requests.get(f"{stack.api_url}/api/v1/batches/{batch['id']}/results", params={"format": "jsonl"},
                         headers=stack.headers(), timeout=30).text.splitlines()
    assert len(lines) == len(rows) and json.loads(lines[0])["row"] == "item"


@pytest.mark.parametrize(("limit", "code"), [({"video_max_frames": 12}, "too_many_frames"),
                                             ({"video_max_decode_s": 0.0}, "decode_timeout")])
def test_worker_side_limits_fail_the_check_with_their_code_and_lose_none(
        active_model: ModelVersion, database: Settings, limit: dict[str, float], code: str) -> None:
    settings = database.model_copy(update=limit)
    with session_scope(settings) as session:
        clip = submit_image(session, make_clip(seconds=3.0, width=128), settings).check
        still = submit_image(session, photo_bytes("coffee", size=200), settings).check
        session.commit()
        ids = [clip.id, still.id]
    score_checks(ids, settings)  # the worker's own function, in this process: it returns, nothing is raised
    with session_scope(settings) as session:
        failed = get_check(session, ids[0])
        assert (failed.status, failed.error_code) == ("failed", code)
        assert "FAKEWATCH_VIDEO_MAX" in (failed.error_message or "")
        assert get_check(session, ids[1]).status == "done"  # the still in the same chunk is scored as ever


def test_fakewatch_check_prints_a_videos_timeline(stack: Stack, tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    clip.write_bytes(make_clip("vp9-webm", seconds=3.0, width=112 + len(stack.api_url) % 4 * 2))
    env = {**os.environ, **stack.env, "FAKEWATCH_API_URL": stack.api_url, "FAKEWATCH_API_KEY": stack.api_key}
    result = subprocess.run([sys.executable, "-m", "fakewatch.cli", "check", str(clip), "--wait", "30"], check=False,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert printed[0].startswith(f"{clip}: ") and "score" in printed[0]
    assert "3.0 s: 4 frames scored" in printed[1] and printed[2].startswith("  timeline 0 s |")
