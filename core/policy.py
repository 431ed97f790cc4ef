"""The one place that turns a score into a verdict (DESIGN.md, "Verdict policy")."""

from __future__ import annotations

from core.enums import Verdict


def decide_verdict(score: float, threshold: float, band: float) -> Verdict:
    """fake when score >= t + b, real when score < t - b, uncertain in between."""
    if score >= threshold + band:
        return Verdict.FAKE
    if score < threshold - band:
        return Verdict.REAL
    return Verdict.UNCERTAIN


def is_flagged(verdict: str) -> bool:
    """Fake and uncertain verdicts go to the review queue."""
    return Verdict(verdict).is_flagged


def verdict_confidence(score: float | None, verdict: str | None) -> float | None:
    """Probability of the verdict's class: P(fake) for fake, P(real) for real, max of the two when uncertain;
    None for a check without a score."""
    if score is None or not verdict:
        return None
    if verdict == Verdict.FAKE:
        return score
    if verdict == Verdict.REAL:
        return 1.0 - score
    return max(score, 1.0 - score)
