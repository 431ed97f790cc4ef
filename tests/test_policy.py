"""The verdict policy (DESIGN.md, rule 5): fake when score >= max(t + b, 0.5), real when score < min(t - b, 0.5),
uncertain otherwise, so a model verdict never reads under 50%."""

from __future__ import annotations

import pytest

from core.policy import decide_verdict, is_flagged, verdict_confidence


@pytest.mark.parametrize(("score", "threshold", "band", "verdict"), [
    (0.0, 0.5, 0.1, "real"), (0.399, 0.5, 0.1, "real"), (0.4, 0.5, 0.1, "uncertain"), (0.5, 0.5, 0.1, "uncertain"),
    (0.599, 0.5, 0.1, "uncertain"), (0.6, 0.5, 0.1, "fake"), (1.0, 0.5, 0.1, "fake"),
    (0.5, 0.5, 0.0, "fake"), (0.4999, 0.5, 0.0, "real"), (0.29, 0.3, 0.05, "uncertain"),
    # A low threshold never makes a score under 0.5 "fake", a high one never makes a score over 0.5 "real".
    (0.3, 0.3, 0.0, "uncertain"), (0.49, 0.2, 0.1, "uncertain"), (0.5, 0.2, 0.1, "fake"), (0.2, 0.2, 0.1, "uncertain"),
    (0.09, 0.2, 0.1, "real"), (0.59, 0.71, 0.1, "uncertain"), (0.4999, 0.71, 0.1, "real"), (0.81, 0.71, 0.1, "fake"),
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


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5, 0.71, 0.9])
@pytest.mark.parametrize("band", [0.0, 0.05, 0.1, 0.3])
def test_a_model_verdict_never_reads_under_fifty_percent(threshold: float, band: float) -> None:
    for score in [i / 200 for i in range(201)]:
        verdict = decide_verdict(score, threshold, band)
        confidence = verdict_confidence(score, verdict)
        assert confidence is not None and confidence >= 0.5, (score, verdict)
