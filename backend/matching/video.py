"""Near-copies of videos, the vPDQ way (Meta's ThreatExchange): a clip is the PDQ hashes of its frames at one a
second (stored on its image row when a worker first decodes it); two clips match when, ignoring frames of quality
below 50, at least 80% of the query's frames are within distance 31 of some frame of the other, and at least 80% of
the other's frames within 31 of some frame of the query. That holds for a re-encoded, resized or lightly trimmed
copy, and fails for a different clip that shares a scene. (The ``vpdq`` package is not used: it has no wheel for
our Python and builds against a system FFmpeg; the rule is a few lines over hashes we already make.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.matching.pdq import hex_to_bytes
from backend.storage.schema import Image, Review, isoformat_z
from core.check_evidence import NearCopyMatch
from core.enums import Label

VPDQ_DISTANCE = 31
VPDQ_MIN_QUALITY = 50
VPDQ_MATCH_SHARE = 0.8
# Reviewed videos compared with a new one, newest review first: a brute-force comparison is enough at this size.
MAX_CANDIDATES = 5000


def frame_hash_row(time_s: float, pdq_hex: str, quality: int) -> dict[str, Any]:
    return {"time_s": round(time_s, 3), "pdq_hex": pdq_hex, "quality": quality}


def _bits(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """The hashes of the frames vPDQ counts (quality 50 or more), as a frames x 256 array of bits."""
    good = [hex_to_bytes(row["pdq_hex"]) for row in rows if (row.get("quality") or 0) >= VPDQ_MIN_QUALITY]
    if not good:
        return np.zeros((0, 256), dtype=bool)
    return np.unpackbits(np.frombuffer(b"".join(good), dtype=np.uint8).reshape(len(good), 32), axis=1).astype(bool)


@dataclass(frozen=True)
class VideoSimilarity:
    query_matched: float  # share of the query's frames within the distance of some frame of the other
    compared_matched: float  # and the other way round
    distance: int  # median distance of the query's frames to their nearest frame of the other

    @property
    def matches(self) -> bool:
        return self.query_matched >= VPDQ_MATCH_SHARE and self.compared_matched >= VPDQ_MATCH_SHARE


def similarity(query: Sequence[dict[str, Any]], compared: Sequence[dict[str, Any]]) -> VideoSimilarity | None:
    """vPDQ's two shares for two clips' frame hashes; None when either has no frame of enough quality."""
    a, b = _bits(query), _bits(compared)
    if not len(a) or not len(b):
        return None
    distances = (a[:, None, :] != b[None, :, :]).sum(axis=2)  # query frames x compared frames
    return VideoSimilarity(query_matched=float((distances.min(axis=1) <= VPDQ_DISTANCE).mean()),
                           compared_matched=float((distances.min(axis=0) <= VPDQ_DISTANCE).mean()),
                           distance=int(np.median(distances.min(axis=1))))


def video_match(session: Session, image: Image) -> NearCopyMatch | None:
    """A video check's ``match``: the reviewed videos its frames match under vPDQ's rule (the closest first, every
    label seen), in the shape a still's match has, with the two shares; None when none matches."""
    if image.media != "video" or not image.frame_hashes:
        return None
    rows = session.execute(
        select(Review, Image).join(Image, Image.id == Review.image_id)
        .where(Image.media == "video", Image.frame_hashes.is_not(None), Image.id != image.id)
        .order_by(Review.created_at.desc(), Review.id.desc()).limit(MAX_CANDIDATES))
    latest: dict[int, tuple[Review, Image]] = {}
    for review, other in rows:
        latest.setdefault(other.id, (review, other))
    found = []
    for review, other in latest.values():
        seen = similarity(image.frame_hashes, other.frame_hashes or [])
        if seen is not None and seen.matches:
            found.append((seen, review, other))
    if not found:
        return None
    found.sort(key=lambda item: (item[0].distance, -item[0].query_matched))
    seen, review, other = found[0]
    return NearCopyMatch(sha256=other.sha256, distance=seen.distance, label=Label(review.label), by=review.reviewer,
                         at=isoformat_z(review.created_at), labels=tuple(sorted({Label(item[1].label) for item in found})),
                         pdq_hex=None, count=len(found), kind="vpdq", query_matched=round(seen.query_matched, 3),
                         compared_matched=round(seen.compared_matched, 3))
