"""The timeline `fakewatch check` prints under a video's verdict."""

from __future__ import annotations

from fakewatch.client_commands import describe_check
from fakewatch.video_timeline import describe_timeline, sparkline, stretches

FRAMES = [{"time_s": float(t), "score": s, "verdict": v, "regions": []}
          for t, s, v in [(0, 0.05, "real"), (1, 0.9, "fake"), (2, 0.95, "fake"), (3, 0.5, "uncertain"),
                          (4, 0.1, "real"), (5, 0.99, "fake")]]


def test_a_video_check_prints_its_timeline_under_the_verdict() -> None:
    result = {"status": "done", "verdict": "fake", "score": 0.95, "confidence": 0.95, "verdict_source": "model",
              "model_version": "m1", "media": "video", "duration_s": 6.0, "frames": FRAMES}
    text = describe_check("clip.mp4", result) + describe_timeline(result)
    lines = text.splitlines()
    assert lines[0].startswith("clip.mp4: AI traces found (confidence 0.95")
    assert "6.0 s: 6 frames scored" in lines[1]
    assert lines[2] == "  timeline 0 s |▁██▅▁█| 6.0 s"
    assert lines[3] == "  fake frames at 1.0-2.0 s, 5.0 s" and lines[4] == "  uncertain frames at 3.0 s"


def test_a_still_prints_no_timeline_and_a_clean_clip_says_so() -> None:
    assert describe_timeline({"media": "image", "frames": None}) == ""
    real = [{**frame, "verdict": "real"} for frame in FRAMES]
    assert describe_timeline({"media": "video", "duration_s": 6.0, "frames": real}).endswith("every frame reads real")
    assert sparkline([0.0, 1.0]) == "▁█" and stretches(real, "fake") == []
