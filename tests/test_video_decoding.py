"""Clips and animations through core/video.py: every container and codec the intake takes, the sampling rule, and
the hostile corpus (each file refused with the code that names its limit, or contained)."""

from __future__ import annotations

import pytest

from core.errors import FakewatchError
from core.media import is_video
from core.policy import clip_score
from core.video import Sampling, VideoLimits, inspect_video, sample_video
from testbed.images import photo_bytes
from tests.fixtures_videos import (
    CLIP_KINDS,
    audio_only,
    claims_huge_frames,
    fake_ftyp,
    make_animation,
    make_clip,
    not_a_video,
    tiny_frames,
)

FORMATS = {"h264-mp4": "MP4", "vp9-webm": "WEBM", "h264-mkv": "MKV", "h264-mov": "MOV", "mjpeg-mkv": "MKV"}


@pytest.mark.parametrize("kind", sorted(CLIP_KINDS))
def test_each_container_and_codec_is_sampled_once_a_second_plus_its_scene_cut(kind: str) -> None:
    video = sample_video(make_clip(kind, seconds=3.0, fps=10, scenes=2), VideoLimits())
    assert video.info.format == FORMATS[kind]
    assert (video.info.width, video.info.height) == (160, 120)
    assert video.duration_s == pytest.approx(3.0, abs=0.15)
    assert video.decoded == 30
    grid = [frame.time_s for frame in video.frames if not frame.scene_change]
    assert grid == pytest.approx([0.0, 1.0, 2.0], abs=0.11)
    cuts = [frame.time_s for frame in video.frames if frame.scene_change]
    assert len(cuts) == 1 and 1.5 <= cuts[0] <= 1.8  # the cut at 1.5 s, found by a probe every 0.25 s
    assert all(frame.image.mode == "RGB" and frame.image.size == (160, 120) for frame in video.frames)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_take_the_same_frame_path(fmt: str) -> None:
    data = make_animation(fmt, frames=25, duration_ms=100)
    assert is_video(data)
    video = sample_video(data, VideoLimits())
    assert video.info.format == fmt
    assert video.decoded == 25
    assert [frame.time_s for frame in video.frames if not frame.scene_change] == pytest.approx([0.0, 1.0, 2.0])


def test_stills_are_not_videos() -> None:
    assert not is_video(photo_bytes(fmt="GIF", size=64))
    assert not is_video(photo_bytes(fmt="PNG", size=64))
    assert not is_video(photo_bytes(fmt="JPEG", size=64))


def test_sampling_is_capped_and_spread_over_a_long_clip() -> None:
    data = make_clip("vp9-webm", seconds=40, fps=4, width=64, height=48, scenes=1)
    video = sample_video(data, VideoLimits(), Sampling(max_frames=8))
    times = [frame.time_s for frame in video.frames]
    assert len(times) <= 8
    assert times[0] == 0.0 and times[-1] >= 30  # the step widened to the clip, not the first 8 seconds


def test_kept_frames_are_scaled_down_to_the_cap() -> None:
    video = sample_video(make_clip(seconds=1.0, width=320, height=240), VideoLimits(), Sampling(max_side=100))
    assert video.frames[0].image.size == (100, 75)
    assert video.frames[0].scale == pytest.approx(100 / 320)


HOSTILE = {
    "60000x60000 header": (claims_huge_frames, VideoLimits(), "invalid_video"),
    "zero-length": (lambda: b"", VideoLimits(), "invalid_video"),
    "audio only": (audio_only, VideoLimits(), "no_video_stream"),
    ".mp4 that is an HTML page": (not_a_video, VideoLimits(), "unsupported_format"),
    ".mp4 with a broken header": (fake_ftyp, VideoLimits(), "invalid_video"),
    "truncated mp4 (index lost)": (lambda: make_clip("h264-mp4")[:3000], VideoLimits(), "invalid_video"),
    "over the byte cap": (make_clip, VideoLimits(max_bytes=1000), "too_large"),
    "over the duration cap": (make_clip, VideoLimits(max_duration_s=2), "video_too_long"),
    "over the frame size cap": (make_clip, VideoLimits(max_width=100, max_height=100), "frame_too_large"),
    "over the frame count cap": (make_clip, VideoLimits(max_frames=10), "too_many_frames"),
    "over the decoding time cap": (make_clip, VideoLimits(max_decode_s=0), "decode_timeout"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_with_the_code_naming_their_limit(name: str) -> None:
    build, limits, code = HOSTILE[name]
    with pytest.raises(FakewatchError) as refused:
        sample_video(build(), limits)
    assert refused.value.code == code
    assert refused.value.message


def test_the_limit_is_named_in_the_message() -> None:
    with pytest.raises(FakewatchError, match="FAKEWATCH_VIDEO_MAX_DURATION_S"):
        inspect_video(make_clip(), VideoLimits(max_duration_s=2))


def test_a_truncated_webm_is_contained_to_the_frames_before_the_damage() -> None:
    data = make_clip("vp9-webm", seconds=3.0)
    video = sample_video(data[: len(data) * 2 // 3], VideoLimits())
    assert 0 < video.decoded < 30


def test_ten_thousand_one_pixel_frames_are_contained_or_refused() -> None:
    data = tiny_frames(10_000, fps=100)
    video = sample_video(data, VideoLimits())  # contained: every frame decoded, 64 kept
    assert video.decoded == 10_000
    assert len(video.frames) <= 64 and video.frames[-1].time_s > 80
    with pytest.raises(FakewatchError) as refused:  # refused under a lower cap
        sample_video(data, VideoLimits(max_frames=5000))
    assert refused.value.code == "too_many_frames"


def test_the_clip_score_is_the_mean_of_the_top_quarter_of_frame_scores() -> None:
    scores = [0.1, 0.2, 0.9, 0.1, 0.8, 0.1, 0.1, 0.1]
    assert clip_score(scores) == pytest.approx((0.9 + 0.8) / 2)  # 8 frames: the top 2
    assert clip_score([0.3]) == 0.3 and clip_score([0.2, 0.6]) == 0.6  # at least one frame
    # A face swap on a third of a clip is not averaged away; one odd frame in twelve does not decide alone.
    assert clip_score([0.9] * 4 + [0.1] * 8) == pytest.approx(0.9)
    assert clip_score([0.95] + [0.1] * 11) == pytest.approx((0.95 + 0.1 + 0.1) / 3)
    with pytest.raises(ValueError):
        clip_score([])
