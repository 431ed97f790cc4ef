"""vPDQ near-copies: a re-encoded, resized and trimmed copy of a reviewed video inherits its review as match
evidence; a different clip does not. Through the worker's own scoring function on a real database."""

from __future__ import annotations

import random

from backend.checks.service import get_check, submit_image
from backend.matching.video import similarity
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import ModelVersion, Review
from core.enums import Label
from tests.fixtures_videos import make_clip, reencoded_copy
from worker.scoring import score_checks


def scored(settings: Settings, data: bytes) -> str:
    with session_scope(settings) as session:
        check_id = submit_image(session, data, settings).check.id
        session.commit()
    score_checks([check_id], settings)
    return check_id


def test_a_copy_of_a_reviewed_video_inherits_its_review(active_model: ModelVersion, database: Settings) -> None:
    original = make_clip("h264-mp4", seconds=6.0, fps=10, width=192, height=144, scenes=3)
    first = scored(database, original)
    with session_scope(database) as session:
        check = get_check(session, first)
        assert check.status == "done" and check.image is not None
        hashes = check.image.frame_hashes
        assert hashes is not None and [row["time_s"] for row in hashes] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert all(row["quality"] >= 50 for row in hashes)
        session.add(Review(image_id=check.image.id, check_id=check.id, label=Label.FAKE, reviewer="moderator"))
        original_sha = check.image.sha256
        session.commit()

    # VP9, 144x108, the first second cut (the test clip pans fast: 10 px a second, so a cut between two hashed
    # frames moves every later one 5 px; vPDQ is made for the slower change of real footage).
    copy = reencoded_copy(original, scale=0.75, trim_s=1.0)
    with session_scope(database) as session:
        copy_check = get_check(session, scored(database, copy))
        assert copy_check.status == "done"
        match = copy_check.match
        assert match is not None and match["sha256"] == original_sha and match["kind"] == "vpdq"
        assert match["query_matched"] >= 0.8 and match["compared_matched"] >= 0.8 and match["distance"] <= 31
        assert (copy_check.verdict, copy_check.verdict_source) == ("fake", "match")

    other = make_clip("h264-mp4", seconds=6.0, fps=10, width=192, height=144, scenes=1)  # one scene: a different clip
    with session_scope(database) as session:
        other_check = get_check(session, scored(database, other))
        assert other_check.status == "done" and other_check.match is None
        assert other_check.verdict_source == "model"


def test_the_rule_needs_eighty_percent_both_ways() -> None:
    rng = random.Random(7)  # random 256-bit hashes lie about 128 bits apart: far beyond 31
    a = [{"time_s": float(i), "pdq_hex": f"{rng.getrandbits(256):064x}", "quality": 90} for i in range(10)]
    far = f"{rng.getrandbits(256):064x}"
    assert similarity(a, a) is not None and similarity(a, a).matches  # type: ignore[union-attr]
    # The copy holds only 7 of the original's 10 seconds (a heavy trim): 100% one way, 70% the other.
    trimmed = similarity(a[:7], a)
    assert trimmed is not None and trimmed.query_matched == 1.0 and trimmed.compared_matched == 0.7
    assert not trimmed.matches
    # Frames of quality under 50 are not counted at all.
    blurred = [*a, *({"time_s": 10.0 + i, "pdq_hex": far, "quality": 10} for i in range(5))]
    assert similarity(blurred, a).matches  # type: ignore[union-attr]
    assert similarity([{"time_s": 0.0, "pdq_hex": far, "quality": 0}], a) is None
