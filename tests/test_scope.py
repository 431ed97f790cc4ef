"""Out of scope is said, not guessed (core/scope.py, rule 5 of core/policy.py): flat fills, tiny images, rendered
text, charts and a real page screenshot from Chromium are "uncertain: out of scope"; the photos that ship in PyPI
wheels are not, whatever the model says."""

from __future__ import annotations

import io
from itertools import groupby

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont
from playwright.sync_api import sync_playwright
from sklearn.datasets import load_sample_images

from core.enums import Verdict, VerdictSource
from core.policy import Evidence, decide, verdict_wording
from core.scope import RUN, flat_share, out_of_scope_reason

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PAGE = """<html><body style="font-family: sans-serif; margin: 24px; background: #fff">
<h1>Quarterly report</h1><p>Revenue grew in every region. The table below lists the figures by month.</p>
<table border="1" cellpadding="6"><tr><th>Month</th><th>Sales</th></tr><tr><td>January</td><td>1,204</td></tr>
<tr><td>February</td><td>1,377</td></tr></table><button>Download</button></body></html>"""


def wheel_photos() -> list[np.ndarray]:
    """The nine photos in the skimage and sklearn wheels."""
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field")
    return [getattr(skimage.data, name)() for name in names] + list(load_sample_images().images)


def as_jpeg(image: Image.Image, quality: int = 90) -> np.ndarray:
    """Through JPEG, as such images are usually shared: flat areas must stay recognisable after compression."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def rendered_text() -> Image.Image:
    """A quote card: lines of text with ordinary spacing (text packed edge to edge is a known miss after JPEG,
    docs/detector.md)."""
    image = Image.new("RGB", (640, 360), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    for line in range(6):
        draw.text((30, 30 + 52 * line), "Breaking: the quick brown fox jumps over the dog", fill="black", font=font)
    return image


def bar_chart() -> Image.Image:
    image = Image.new("RGB", (600, 400), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.line((40, 360, 580, 360), fill="black", width=2)
    draw.line((40, 20, 40, 360), fill="black", width=2)
    for index, height in enumerate((120, 260, 180, 300, 90)):
        draw.rectangle((70 + 100 * index, 360 - height, 130 + 100 * index, 358), fill=(40 + 40 * index, 90, 200))
    draw.text((250, 370), "Sales by region", fill="black")
    return image


def page_screenshot() -> Image.Image:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.set_content(PAGE)
            shot = page.screenshot(type="png")
        finally:
            browser.close()
    return Image.open(io.BytesIO(shot)).convert("RGB")


def test_graphics_flat_fills_and_tiny_images_are_out_of_scope() -> None:
    flat = np.full((6000 // 10, 8000 // 10, 3), 128, dtype=np.uint8)  # the flat grey, at a tenth the size
    noisy_flat = np.clip(flat + np.random.default_rng(0).normal(0, 1.0, flat.shape), 0, 255).astype(np.uint8)
    assert "flat or near-empty" in (out_of_scope_reason(flat) or "")
    assert "flat or near-empty" in (out_of_scope_reason(noisy_flat) or "")
    tiny = np.asarray(Image.fromarray(wheel_photos()[0]).resize((48, 48)))
    assert "too small" in (out_of_scope_reason(tiny) or "")
    for name, image in (("text", rendered_text()), ("chart", bar_chart()), ("screenshot", page_screenshot())):
        for pixels in (np.asarray(image), as_jpeg(image)):
            reason = out_of_scope_reason(pixels)
            assert reason is not None and reason.startswith("out of scope: flat-colour graphics"), (name, reason)


def test_the_wheel_photos_are_in_scope() -> None:
    for photo in wheel_photos():
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo
        assert out_of_scope_reason(photo) is None
        assert out_of_scope_reason(as_jpeg(Image.fromarray(photo), 60)) is None, photo.shape


@pytest.mark.parametrize("score", [0.01, 0.5, 0.99])
def test_the_policy_says_uncertain_with_the_reason_instead_of_a_model_verdict(score: float) -> None:
    reason = out_of_scope_reason(np.full((200, 300, 3), 40, dtype=np.uint8))
    decision = decide(Evidence(score=score, threshold=0.5, band=0.1, out_of_scope=reason))
    assert decision.verdict == Verdict.UNCERTAIN and decision.source == VerdictSource.MODEL
    assert decision.confidence is None and decision.reason == reason
    assert verdict_wording(decision) == f"uncertain: {reason}"
    # Stronger evidence still decides: a moderator's label or declared-AI provenance beats the scope rule.
    assert decide(Evidence(score=score, declares_ai=True, out_of_scope=reason)).verdict == Verdict.FAKE


def test_a_low_score_reads_no_ai_traces_found_with_its_confidence() -> None:
    assert verdict_wording(decide(Evidence(score=0.17, threshold=0.5, band=0.1))) == "no AI traces found (83%)"
    assert verdict_wording(decide(Evidence(score=0.9, threshold=0.5, band=0.1))) == "AI traces found (90%)"
    assert verdict_wording(decide(Evidence(score=0.5, threshold=0.5, band=0.1))) == "uncertain (50%)"


def test_flat_share_counts_the_pixels_of_long_one_colour_runs_within_each_row() -> None:
    """Against the rule said plainly: each row's maximal runs of one exact colour, counted when ``RUN`` or longer
    (on few colours, stripes of repeats and runs touching both row ends, so runs of every length occur)."""
    rng = np.random.default_rng(24)
    for _ in range(60):
        height, width = int(rng.integers(1, 12)), int(rng.integers(RUN, 90))
        pixels = rng.integers(0, int(rng.integers(1, 4)), (height, width, 3), dtype=np.uint8)
        pixels = np.repeat(pixels, int(rng.integers(1, 20)), axis=1)[:, :width]
        expected = sum(length for row in pixels.tolist()
                       for length in (len(list(run)) for _, run in groupby(map(tuple, row))) if length >= RUN)
        assert flat_share(pixels) == pytest.approx(expected / (height * width), abs=1e-12)
