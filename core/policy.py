"""The one place that turns a score into a verdict (DESIGN.md, "Verdict policy")."""

from __future__ import annotations

from core.enums import Verdict


def decide_verdict(score: float, threshold: float, band: float) -> Verdict:
    """Rule 5 of the verdict policy: fake when score >= max(t + b, 0.5), real when score < min(t - b, 0.5),
    uncertain in between. The 0.5 bounds keep a model verdict from ever reading under 50%: a "real" at 0.59
    would otherwise be shown as "Real 41%"."""
    if score >= max(threshold + band, 0.5):
        return Verdict.FAKE
    if score < min(threshold - band, 0.5):
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
