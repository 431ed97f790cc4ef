"""The one place that turns a score into a verdict (DESIGN.md, "Verdict policy")."""

from __future__ import annotations

from typing import Literal

Verdict = Literal["real", "fake", "uncertain"]


def decide_verdict(score: float, threshold: float, band: float) -> Verdict:
    """fake when score >= t + b, real when score < t - b, uncertain in between."""
    if score >= threshold + band:
        return "fake"
    if score < threshold - band:
        return "real"
    return "uncertain"


def is_flagged(verdict: str) -> bool:
    """Fake and uncertain verdicts go to the review queue."""
    return verdict in ("fake", "uncertain")


def verdict_confidence(score: float, verdict: str) -> float:
    """Probability of the verdict's class: P(fake) for fake, P(real) for real, max of the two when uncertain."""
    if verdict == "fake":
        return score
    if verdict == "real":
        return 1.0 - score
    return max(score, 1.0 - score)
