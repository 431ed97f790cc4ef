"""Scoring video checks: each stored clip (or animation) is decoded once, under the video limits, its sampled
frames are scored by the same detector as stills (with their regions), and the clip's score is decided by
core.policy.clip_score; each frame's own verdict is rule 5 on its score. A refused clip ends its checks failed with
the limit's code; nothing it does can take the worker down with it (core/video.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from backend.checks.service import record_failure, record_score
from backend.matching.lookups import hash_fields, match_for_image
from backend.matching.video import frame_hash_row
from backend.settings import Settings
from backend.storage.schema import Check, ModelVersion
from backend.storage.store import image_store, read_stored
from core.check_evidence import NearCopyMatch, regions_from_json
from core.errors import FakewatchError
from core.policy import clip_score, decide_verdict
from core.video import SampledFrame, Video, sample_video
from worker.detectors import detector_for

log = logging.getLogger("fakewatch.worker")


def score_video_checks(session: Session, checks: Sequence[Check], version: ModelVersion, settings: Settings,
                       matches: dict[int, NearCopyMatch | None]) -> None:
    """Decode, sample and score each clip of these running checks once, and record every check of it. A clip
    decoded for the first time gets its frames' PDQ hashes, and its vPDQ match is looked up with them."""
    by_image: dict[int, list[Check]] = {}
    for check in checks:
        assert check.image_id is not None
        by_image.setdefault(check.image_id, []).append(check)
    for image_id, group in by_image.items():
        first_time = group[0].image is not None and group[0].image.frame_hashes is None
        frames = _scored_frames(group, version, settings)
        if frames is None:
            continue
        if first_time:
            session.flush()
            matches[image_id] = match_for_image(session, settings, group[0].image)
        score = clip_score([frame["score"] for frame in frames])
        top = max(frames, key=lambda frame: frame["score"])  # its heat map is the check's regions
        for check in group:
            record_score(check, version, score, regions=regions_from_json(top["regions"]), match=matches.get(image_id),
                         frames=frames)


def _scored_frames(group: list[Check], version: ModelVersion, settings: Settings) -> list[dict[str, Any]] | None:
    """The clip's sampled frames with their scores, or None after recording the group's failure."""
    stored = group[0].image
    assert stored is not None
    started = time.monotonic()
    hashes: list[dict[str, Any]] = []

    def hash_second(time_s: float, image: PILImage.Image) -> None:
        pdq_hex, quality = hash_fields(image)
        hashes.append(frame_hash_row(time_s, pdq_hex, quality))

    try:
        video = sample_video(read_stored(stored.storage_key, image_store(settings)), settings.video_limits,
                             settings.video_sampling, progress=_progress_logger(stored.sha256),
                             each_second=hash_second if stored.frame_hashes is None else None)
    except (FakewatchError, OSError) as error:
        code = error.code if isinstance(error, FakewatchError) else "invalid_video"
        message = error.message if isinstance(error, FakewatchError) else f"The stored video could not be read: {error}"
        for check in group:
            record_failure(check, code, message)
        return None
    if stored.duration_s is None:  # a header with no duration: the frames told it
        stored.duration_s = video.duration_s
    if hashes:
        stored.frame_hashes = hashes
    try:
        frames = score_frames(version, video, settings)
    except Exception as error:
        log.exception("model %s failed on the frames of video %s", version.name, stored.sha256)
        for check in group:
            record_failure(check, "model_error", f"The model failed on this video: {error}")
        return None
    log.info("video %s: %d frames decoded, %d scored in %.1f s", stored.sha256[:12], video.decoded, len(frames),
             time.monotonic() - started)
    return frames


# A clip at least this long logs its decoding progress every PROGRESS_EVERY_S seconds of clip.
LONG_CLIP_S = 30.0
PROGRESS_EVERY_S = 10


def _progress_logger(sha256: str) -> Callable[[float, float | None], None]:
    def report(seconds: float, duration: float | None) -> None:
        if (duration or seconds) >= LONG_CLIP_S and int(seconds) % PROGRESS_EVERY_S == 0:
            total = f"{duration:.0f}" if duration else "?"
            log.info("video %s: %.0f of %s s decoded", sha256[:12], seconds, total)
    return report


def score_frames(version: ModelVersion, video: Video, settings: Settings) -> list[dict[str, Any]]:
    """Each sampled frame as the check records it: time, score, rule 5's verdict and regions in the clip's pixels."""
    scored = detector_for(version, settings).score_with_regions([frame.image for frame in video.frames])
    return [{"time_s": frame.time_s, "score": round(result.score, 4),
             "verdict": decide_verdict(result.score, version.threshold, version.band).value,
             "regions": [_in_clip_pixels(region.to_dict(), frame) for region in result.regions]}
            for frame, result in zip(video.frames, scored, strict=True)]


def _in_clip_pixels(region: dict[str, Any], frame: SampledFrame) -> dict[str, Any]:
    """A region's box in the clip's own pixels (a kept frame may have been scaled down)."""
    if frame.scale == 1.0:
        return region
    return {**region, "box": [round(value / frame.scale) for value in region["box"]]}
