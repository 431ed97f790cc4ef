"""The verdict policy (DESIGN.md): fake when score >= t + b, real when score < t - b, uncertain otherwise."""

from __future__ import annotations

import pytest

from core.policy import decide_verdict, is_flagged, verdict_confidence


@pytest.mark.parametrize(("score", "threshold", "band", "verdict"), [
    (0.0, 0.5, 0.1, "real"), (0.399, 0.5, 0.1, "real"), (0.4, 0.5, 0.1, "uncertain"), (0.5, 0.5, 0.1, "uncertain"),
    (0.599, 0.5, 0.1, "uncertain"), (0.6, 0.5, 0.1, "fake"), (1.0, 0.5, 0.1, "fake"),
    (0.5, 0.5, 0.0, "fake"), (0.4999, 0.5, 0.0, "real"), (0.3, 0.3, 0.0, "fake"), (0.29, 0.3, 0.05, "uncertain"),
])
def test_verdict_from_score(score: float, threshold: float, band: float, verdict: str) -> None:
    assert decide_verdict(score, threshold, band) == verdict


def test_fake_and_uncertain_are_flagged() -> None:
    assert is_flagged("fake") and is_flagged("uncertain") and not is_flagged("real")


def test_confidence_is_the_verdicts_probability() -> None:
    assert verdict_confidence(0.93, "fake") == pytest.approx(0.93)
    assert verdict_confidence(0.1, "real") == pytest.approx(0.9)
    assert verdict_confidence(0.45, "uncertain") == pytest.approx(0.55)
    assert verdict_confidence(None, None) is None and verdict_confidence(0.3, None) is None  # not scored yet
