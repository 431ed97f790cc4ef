"""The evidence core.policy weighs for a check, gathered from what is stored: the model's score with its version's
threshold and band, the image's provenance, the check's near-duplicate match and the latest review of its bytes.

Scoring records the decision it reached (``checks.verdict``, ``verdict_source``, ``flagged``), which the queue and
the dashboards filter on. What a check shows is decided again when it is read, from the same evidence plus the
latest review (rule 1), so a relabel or an undo changes every later read without rewriting old rows.
"""

from __future__ import annotations

from typing import Any

from backend.provenance import Provenance
from backend.storage.schema import Check, Image, Review
from core.enums import Label, Verdict, VerdictSource
from core.policy import Decision, Evidence, decide, verdict_confidence

EMPTY_PROVENANCE: dict[str, Any] = {"c2pa": None, "signals": []}


def provenance_of(image: Image | None) -> dict[str, Any]:
    """The provenance a check shows: what was read from its image's bytes (nothing for images stored before)."""
    return image.provenance if image is not None and image.provenance else EMPTY_PROVENANCE


def provenance_summary(provenance: dict[str, Any] | None) -> str:
    """The evidence in one line ("AI: Content Credentials, OpenAI"), as the API, exports and console show it."""
    return Provenance.from_dict(provenance).summary()


def match_labels(match: dict[str, Any] | None) -> list[Label]:
    """Every label among the labelled near-duplicates a check was matched to (the nearest one's when only that
    was recorded)."""
    if not match:
        return []
    return [Label(label) for label in match.get("labels") or [match["label"]]]


def gather_evidence(score: float | None, threshold: float, band: float, image: Image | None,
                    match: dict[str, Any] | None, review: Label | None = None) -> Evidence:
    """The policy's evidence for one check."""
    provenance = Provenance.from_dict(provenance_of(image))
    return Evidence(score=score, threshold=threshold, band=band, review=review, match_labels=match_labels(match),
                    out_of_scope=image.scope if image is not None else None, **provenance.policy_facts())


def decide_at_scoring(check: Check, score: float, threshold: float, band: float,
                      match: dict[str, Any] | None = None) -> Decision:
    """What a check is decided to be when its model score arrives (rules 2 to 5)."""
    return decide(gather_evidence(score, threshold, band, check.image, match))


def decision_when_read(check: Check, review: Review | None) -> Decision:
    """What a check shows now: the decision at scoring with the latest review of its bytes on top (rule 1)."""
    label = Label(review.label) if review is not None else None
    if check.model_version is None:  # not scored (queued, running, failed): only a review can decide
        return decide(Evidence(score=None, review=label))
    return decide(gather_evidence(check.score, check.model_version.threshold, check.model_version.band,
                                  check.image, check.match, label))


def stored_decision_when_read(score: float | None, verdict: Verdict | None, source: VerdictSource | None,
                              review: Label | None) -> Decision:
    """What a check shows now, from its stored decision and the latest review label of its bytes, without loading
    the check (batch exports stream thousands of rows): rule 1 on top of what scoring decided with rules 2 to 5."""
    if review is not None:
        return decide(Evidence(score=score, review=review))
    source = source or (VerdictSource.MODEL if verdict is not None else None)
    confidence = verdict_confidence(score, verdict) if source == VerdictSource.MODEL else None
    return Decision(verdict, source, confidence)
