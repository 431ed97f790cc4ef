"""The one place that turns a score into a verdict (DESIGN.md, "Verdict policy")."""

from __future__ import annotations

from typing import Literal

Verdict = Literal["real", "fake", "uncertain"]
VERDICTS: tuple[Verdict, ...] = ("real", "uncertain", "fake")
# Fake and uncertain verdicts go to the review queue.
FLAGGED_VERDICTS: tuple[Verdict, ...] = ("fake", "uncertain")


def decide_verdict(score: float, threshold: float, band: float) -> Verdict:
    """fake when score >= t + b, real when score < t - b, uncertain in between."""
    if score >= threshold + band:
        return "fake"
    if score < threshold - band:
        return "real"
    return "uncertain"


def is_flagged(verdict: str) -> bool:
    """Fake and uncertain verdicts go to the review queue."""
    return verdict in FLAGGED_VERDICTS


def verdict_confidence(score: float | None, verdict: str | None) -> float | None:
    """Probability of the verdict's class: P(fake) for fake, P(real) for real, max of the two when uncertain;
    None for a check without a score."""
    if score is None or not verdict:
        return None
    if verdict == "fake":
        return score
    if verdict == "real":
        return 1.0 - score
    return max(score, 1.0 - score)
