"""A video's page in the console, in a real headless Chromium: the timeline of frame scores with the band shaded,
the frames as thumbnails, a click on a frame for its heat map, and a review that labels the whole video; a
screenshot at 1366x768."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from backend.checks.service import claim_checks, record_score, submit_image
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import Image, ModelVersion, Review
from core.check_evidence import regions_from_json
from core.policy import clip_score, decide_verdict
from core.video import sample_video
from testbed.stack import isolated_settings
from tests.fixtures_videos import make_clip
from tests.test_admin import add_moderator, register_test_model
from tests.test_admin_screens import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    LAYOUTS,
    Console,
    capture,
    cut_buttons,
    log_in,
    running_console,
    settle,
    wait_for_cookie,
)

# The worker's scores for the clip's frames, as seeded: low, then a stretch the model doubts, then fake.
FRAME_SCORES = [0.08, 0.12, 0.55, 0.91, 0.97, 0.2]


def seed_video_check(settings: Settings) -> str:
    """A scored video check recorded as the worker records one (frames at the sampler's times, 2x2 regions)."""
    register_test_model(settings)
    data = make_clip("h264-mp4", seconds=5.0, fps=10, width=192, height=144, scenes=2)
    frames_sampled = sample_video(data, settings.video_limits, settings.video_sampling).frames
    with session_scope(settings) as session:
        check_id = submit_image(session, data, settings).check.id
    with session_scope(settings) as session:
        [check] = claim_checks(session, [check_id], stale_after_s=60)
        version = session.query(ModelVersion).filter(ModelVersion.active.is_(True)).one()
        scores = (FRAME_SCORES * 3)[: len(frames_sampled)]
        frames: list[dict[str, Any]] = [{"time_s": frame.time_s, "score": score,
                   "verdict": decide_verdict(score, version.threshold, version.band).value,
                   "regions": [{"box": [x, y, x + 96, y + 72], "score": round(min(1.0, score * (0.7 + 0.1 * i)), 3)}
                               for i, (x, y) in enumerate([(0, 0), (96, 0), (0, 72), (96, 72)])]}
                  for frame, score in zip(frames_sampled, scores, strict=True)]
        record_score(check, version, clip_score(scores),
                     regions=regions_from_json(frames[scores.index(max(scores))]["regions"]), frames=frames)
        assert check.image is not None
        return check.image.sha256


@pytest.fixture(scope="module")
def video_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Console, Settings, str]]:
    data_dir = tmp_path_factory.mktemp("video-console") / "var"
    settings = isolated_settings(data_dir=data_dir)
    upgrade_database(settings.database)
    add_moderator(settings)
    sha256 = seed_video_check(settings)
    get_engine(settings.database).dispose()
    with running_console(data_dir) as console:
        yield console, settings, sha256


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield launched
        launched.close()


def test_a_videos_page_shows_its_timeline_frames_and_heat_map(video_console: tuple[Console, Settings, str],
                                                              chromium: Browser) -> None:
    console, settings, sha256 = video_console
    context = chromium.new_context(viewport=LAYOUTS["1366x768"])  # type: ignore[arg-type]
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        log_in(page, console.url)
        settle(page, "Review queue")
        expect(page.get_by_text("image(s) waiting")).to_contain_text("1 image(s) waiting")  # the video, queued
        wait_for_cookie(page.context)  # the login survives a load: the server sets its HttpOnly cookie
        page.goto(f"{console.url}/image?sha256={sha256}")
        expect(page.get_by_role("heading", name="Timeline")).to_be_visible(timeout=60_000)  # a loaded machine
        settle(page, "Image")
        expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
        expect(page.get_by_text("frames scored over 5.0 s")).to_be_visible()
        expect(page.locator("[data-testid=stVegaLiteChart]")).to_have_count(1)
        expect(page.locator("video")).to_have_count(1)
        page.get_by_role("button", name=re.compile(r" s · 0\.91$")).click()  # the frame scored 0.91
        expect(page.get_by_role("heading", name=re.compile(r"^Frame at [\d.]+ s: fake, P\(fake\) 0\.91"))).to_be_visible()
        expect(page.get_by_text("Click a frame for its heat map.")).to_have_count(0)
        page.wait_for_timeout(1000)
        assert cut_buttons(page) == []
        capture(page, "video-1366x768", viewport=LAYOUTS["1366x768"])
        page.get_by_role("button", name="Fake", exact=True).click()  # a review labels the whole video
        expect(page.get_by_text("Labelled fake.")).to_be_visible()
    finally:
        context.close()
    with session_scope(settings) as session:
        image = session.query(Image).filter(Image.sha256 == sha256).one()
        assert [review.label for review in session.query(Review).filter(Review.image_id == image.id)] == ["fake"]
