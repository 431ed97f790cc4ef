"""The evidence core.policy weighs for a check, gathered from what is stored: the model's score with its version's
threshold and band, the image's provenance, the check's near-duplicate match and the latest review of its bytes.

Scoring records the decision it reached (``checks.verdict``, ``verdict_source``, ``flagged``), which the queue and
the dashboards filter on. What a check shows is decided again when it is read, from the same evidence plus the
latest review (rule 1), so a relabel or an undo changes every later read without rewriting old rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, or_, select

from backend.provenance import Provenance
from backend.storage.schema import Check, Image, Review
from core.check_evidence import NearCopyMatch
from core.enums import Label, Verdict, VerdictSource
from core.policy import Decision, Evidence, decide, verdict_confidence

EMPTY_PROVENANCE: dict[str, Any] = {"c2pa": None, "signals": []}


def provenance_of(image: Image | None) -> dict[str, Any]:
    """The provenance a check shows: what was read from its image's bytes (nothing for images stored before)."""
    return image.provenance if image is not None and image.provenance else EMPTY_PROVENANCE


def provenance_summary(provenance: dict[str, Any] | None) -> str:
    """The evidence in one line ("AI: Content Credentials, OpenAI"), as the API, exports and console show it."""
    return Provenance.from_dict(provenance).summary()


def gather_evidence(score: float | None, threshold: float, band: float, image: Image | None,
                    match: NearCopyMatch | None, review: Label | None = None) -> Evidence:
    """The policy's evidence for one check."""
    provenance = Provenance.from_dict(provenance_of(image))
    return Evidence(score=score, threshold=threshold, band=band, review=review,
                    match_labels=list(match.labels) if match is not None else [],
                    out_of_scope=image.scope if image is not None else None, **provenance.policy_facts())


def decide_at_scoring(check: Check, score: float, threshold: float, band: float,
                      match: NearCopyMatch | None = None) -> Decision:
    """What a check is decided to be when its model score arrives (rules 2 to 5)."""
    return decide(gather_evidence(score, threshold, band, check.image, match))


def decision_when_read(check: Check, review: Review | None) -> Decision:
    """What a check shows now: the decision at scoring with the latest review of its bytes on top (rule 1)."""
    label = Label(review.label) if review is not None else None
    if check.model_version is None:  # not scored (queued, running, failed): only a review can decide
        return decide(Evidence(score=None, review=label))
    return decide(gather_evidence(check.score, check.model_version.threshold, check.model_version.band,
                                  check.image, NearCopyMatch.from_dict(check.match) if check.match else None, label))


def stored_decision_when_read(score: float | None, verdict: Verdict | None, source: VerdictSource | None,
                              review: Label | None) -> Decision:
    """What a check shows now, from its stored decision and the latest review label of its bytes, without loading
    the check (batch exports stream thousands of rows): rule 1 on top of what scoring decided with rules 2 to 5."""
    if review is not None:
        return decide(Evidence(score=score, review=review))
    source = source or (VerdictSource.MODEL if verdict is not None else None)
    confidence = verdict_confidence(score, verdict) if source == VerdictSource.MODEL else None
    return Decision(verdict, source, confidence)


def latest_review_label() -> ScalarSelect[Any]:
    """The latest review label of a check's bytes, as a subquery correlated with ``checks`` (None: unreviewed)."""
    return (select(Review.label).where(Review.image_id == Check.image_id)
            .order_by(Review.created_at.desc(), Review.id.desc()).limit(1).correlate(Check).scalar_subquery())


def flagged_when_read(review: ScalarSelect[Any]) -> ColumnElement[bool]:
    """``stored_decision_when_read(...).flagged`` in SQL, for counts and filters over many checks: a review of the
    bytes wins (labelled fake: flagged; real: not), else what scoring decided. Batch summaries and exports both
    count with it, so a batch's `flagged` is the number of rows `only=flagged` exports."""
    return or_(review == Label.FAKE.value, and_(review.is_(None), Check.flagged.is_(True)))
