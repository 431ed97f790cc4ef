"""The verdict policy (docs/architecture.md, "Verdict rules"): the five rules in order, and rule 5's bounds, so a
model verdict never reads under 50%."""

from __future__ import annotations

import pytest

from core.enums import Label, Verdict, VerdictSource
from core.policy import Decision, Evidence, decide, decide_verdict, is_flagged, verdict_confidence


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


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5, 0.71, 0.9])
@pytest.mark.parametrize("band", [0.0, 0.05, 0.1, 0.3])
def test_a_model_verdict_never_reads_under_fifty_percent(threshold: float, band: float) -> None:
    for score in [i / 200 for i in range(201)]:
        verdict = decide_verdict(score, threshold, band)
        confidence = verdict_confidence(score, verdict)
        assert confidence is not None and confidence >= 0.5, (score, verdict)


def test_fake_and_uncertain_are_flagged() -> None:
    assert is_flagged("fake") and is_flagged("uncertain") and not is_flagged("real")


def test_confidence_is_the_verdicts_probability() -> None:
    assert verdict_confidence(0.93, "fake") == pytest.approx(0.93)
    assert verdict_confidence(0.1, "real") == pytest.approx(0.9)
    assert verdict_confidence(0.45, "uncertain") == pytest.approx(0.55)
    assert verdict_confidence(None, None) is None and verdict_confidence(0.3, None) is None  # not scored yet


REAL_SCORE, DOUBT_SCORE, FAKE_SCORE = 0.1, 0.55, 0.9  # with t = 0.5, b = 0.1


def decision(score: float | None = REAL_SCORE, **evidence: object) -> Decision:
    return decide(Evidence(score=score, threshold=0.5, band=0.1, **evidence))  # type: ignore[arg-type]


def test_rule_5_the_model_decides_when_nothing_else_does() -> None:
    assert decision(REAL_SCORE) == Decision(Verdict.REAL, VerdictSource.MODEL, 0.9)
    assert decision(FAKE_SCORE) == Decision(Verdict.FAKE, VerdictSource.MODEL, 0.9)
    assert decision(DOUBT_SCORE).verdict == Verdict.UNCERTAIN and decision(DOUBT_SCORE).flagged
    assert decision(None) == Decision(None, None, None) and not decision(None).flagged  # not scored yet


def test_rule_1_a_review_outranks_everything() -> None:
    reviewed = decision(FAKE_SCORE, review=Label.REAL, declares_ai=True, match_labels=[Label.FAKE])
    assert reviewed == Decision(Verdict.REAL, VerdictSource.REVIEW, None) and not reviewed.flagged
    assert decision(REAL_SCORE, review=Label.FAKE) == Decision(Verdict.FAKE, VerdictSource.REVIEW, None)
    assert decision(None, review=Label.FAKE).verdict == Verdict.FAKE


def test_rule_2_declared_ai_is_fake_whatever_the_model_says() -> None:
    assert decision(REAL_SCORE, declares_ai=True) == Decision(Verdict.FAKE, VerdictSource.PROVENANCE, None)
    # It outranks a real-labelled near-copy and a trusted capture claim.
    assert decision(REAL_SCORE, declares_ai=True, match_labels=[Label.REAL], trusted_capture=True).verdict == "fake"


def test_rule_2_an_invalid_manifest_that_claims_ai_is_never_real() -> None:
    assert decision(REAL_SCORE, invalid_manifest_claims_ai=True) == Decision(
        Verdict.UNCERTAIN, VerdictSource.PROVENANCE, None)
    assert decision(REAL_SCORE, invalid_manifest_claims_ai=True, match_labels=[Label.REAL]).verdict == "uncertain"
    assert decision(FAKE_SCORE, invalid_manifest_claims_ai=True) == Decision(
        Verdict.FAKE, VerdictSource.MODEL, 0.9)


def test_rule_2_tampered_content_credentials_are_never_cleared() -> None:
    """A manifest that fails validation, whatever it claims, sends a "real" to the review queue (with the reason
    in the provenance summary) instead of a plain "Real 75%"; the model's fake stands."""
    tampered = decision(REAL_SCORE, invalid_manifest=True)
    assert tampered == Decision(Verdict.UNCERTAIN, VerdictSource.PROVENANCE, None) and tampered.flagged
    assert decision(REAL_SCORE, invalid_manifest=True, match_labels=[Label.REAL]).verdict == "uncertain"
    assert decision(FAKE_SCORE, invalid_manifest=True) == Decision(Verdict.FAKE, VerdictSource.MODEL, 0.9)
    assert decision(REAL_SCORE, invalid_manifest=True, review=Label.REAL).verdict == "real"  # a person cleared it


def test_rule_3_near_duplicates_of_labelled_images() -> None:
    assert decision(REAL_SCORE, match_labels=[Label.FAKE]) == Decision(Verdict.FAKE, VerdictSource.MATCH, None)
    assert decision(REAL_SCORE, match_labels=[Label.REAL]) == Decision(Verdict.REAL, VerdictSource.MATCH, None)
    # A real label never clears a copy the model calls fake or doubts.
    assert decision(FAKE_SCORE, match_labels=[Label.REAL]) == Decision(Verdict.UNCERTAIN, VerdictSource.MATCH, None)
    assert decision(DOUBT_SCORE, match_labels=[Label.REAL]).verdict == Verdict.UNCERTAIN
    assert decision(REAL_SCORE, match_labels=[Label.REAL, Label.FAKE]).verdict == Verdict.UNCERTAIN
    # A match outranks a trusted capture.
    assert decision(REAL_SCORE, match_labels=[Label.FAKE], trusted_capture=True).source == VerdictSource.MATCH


def test_rule_4_a_trusted_capture_clears_unless_the_model_says_fake() -> None:
    assert decision(DOUBT_SCORE, trusted_capture=True) == Decision(Verdict.REAL, VerdictSource.PROVENANCE, None)
    assert decision(FAKE_SCORE, trusted_capture=True) == Decision(Verdict.UNCERTAIN, VerdictSource.PROVENANCE, None)
