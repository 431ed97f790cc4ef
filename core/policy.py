"""The one place that decides a verdict (docs/architecture.md, "Verdict rules"), first rule that applies:

1. a moderator's review of these exact bytes: its label (``review``);
2. declared-AI provenance (a C2PA action or ingredient, an IPTC digital source type or a generator signature that
   says AI, trusted signer or not): fake (``provenance``); a manifest that fails validation (tampered Content
   Credentials), whatever it claims: never real, so it goes to the review queue with that reason;
3. a near-duplicate of a labelled image: a fake label gives fake (``match``); a real label gives real only if the
   model also says real, else uncertain; labels that disagree give uncertain;
4. a valid C2PA capture manifest from a signer in the trust list: real unless the model says fake, then
   uncertain (``provenance``);
5. an image out of the model's scope (core/scope.py: flat or near-empty, tiny, screenshots, drawings, charts,
   rendered text): uncertain, with the reason "out of scope: ..." and no confidence (``model``);
6. the model, with threshold t and band b: fake when score >= max(t + b, 0.5), real when score < min(t - b, 0.5),
   uncertain otherwise, so a model verdict never reads under 50% (``model``).

A video (or animation) is scored frame by frame and rule 5 reads its clip score (``clip_score``): the mean of the
top quarter of its frame scores, so a face swap shown for part of a clip is not averaged away by the rest, and one
odd frame alone does not decide (docs/video.md; chosen on benchmarks/video.py). Rules 1 to 4 apply to a video as
to a still: a review of its bytes, AI provenance in its container, a labelled near-copy (vPDQ), a trusted capture.

Fake and uncertain are flagged. ``confidence`` is the probability of the verdict's class when the model decides,
and None when other evidence does (clients show the evidence instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.enums import Label, Verdict, VerdictSource


def decide_verdict(score: float, threshold: float, band: float) -> Verdict:
    """Rule 6: fake when score >= max(t + b, 0.5), real when score < min(t - b, 0.5), uncertain in between. The 0.5
    bounds keep a model verdict from ever reading under 50%: a "real" at 0.59 would otherwise read "Real 41%"."""
    if score >= max(threshold + band, 0.5):
        return Verdict.FAKE
    if score < min(threshold - band, 0.5):
        return Verdict.REAL
    return Verdict.UNCERTAIN


# The share of a clip's highest frame scores averaged into its score.
CLIP_TOP_SHARE = 0.25


def clip_score(frame_scores: Sequence[float], top_share: float = CLIP_TOP_SHARE) -> float:
    """A video's score from its sampled frames' scores: the mean of the highest ``top_share`` of them (at least one
    frame), which rule 5 then reads as it reads a still's score."""
    if not frame_scores:
        raise ValueError("a clip score needs at least one frame score")
    ranked = sorted(frame_scores, reverse=True)
    top = ranked[: max(1, round(len(ranked) * top_share))]
    return float(sum(top) / len(top))


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


@dataclass(frozen=True)
class Evidence:
    """Everything the policy weighs for one check. ``score`` is None only while the model has not scored."""

    score: float | None
    threshold: float = 0.5
    band: float = 0.0
    review: Label | None = None  # rule 1: the latest moderator label of these exact bytes
    declares_ai: bool = False  # rule 2: any AI claim in the file's metadata, signer trusted or not
    invalid_manifest_claims_ai: bool = False  # rule 2: a manifest that fails validation and claims AI
    invalid_manifest: bool = False  # rule 2: a manifest that fails validation (tampered), whatever it claims
    match_labels: Sequence[Label] = ()  # rule 3: latest labels of the labelled near-duplicates
    trusted_capture: bool = False  # rule 4: a valid capture manifest from a trusted signer
    out_of_scope: str | None = None  # rule 5: why the model should not judge this image (core.scope)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict | None
    source: VerdictSource | None
    confidence: float | None
    reason: str | None = None  # said when the verdict is not the evidence's plain reading ("out of scope: ...")

    @property
    def flagged(self) -> bool:
        return self.verdict is not None and self.verdict.is_flagged


def decide(evidence: Evidence) -> Decision:
    """The verdict, what decided it and its confidence, by the first rule that applies."""
    if evidence.review is not None:
        return Decision(Verdict(evidence.review.value), VerdictSource.REVIEW, None)
    if evidence.declares_ai:
        return Decision(Verdict.FAKE, VerdictSource.PROVENANCE, None)
    model = None if evidence.score is None else decide_verdict(evidence.score, evidence.threshold, evidence.band)
    decision = _by_match(evidence.match_labels, model) or _by_capture(evidence.trusted_capture, model)
    if decision is None:
        if model is None:
            return Decision(None, None, None)
        if evidence.out_of_scope:
            # The model has no evidence either way on what it was not made for: say so rather than guess.
            return Decision(Verdict.UNCERTAIN, VerdictSource.MODEL, None, evidence.out_of_scope)
        decision = Decision(model, VerdictSource.MODEL, verdict_confidence(evidence.score, model))
    if (evidence.invalid_manifest or evidence.invalid_manifest_claims_ai) and decision.verdict == Verdict.REAL:
        # A broken manifest proves nothing it says, but someone altered the file after it was signed: a person
        # looks before it is cleared (the provenance summary names the failure).
        return Decision(Verdict.UNCERTAIN, VerdictSource.PROVENANCE, None)
    return decision


def _by_match(labels: Sequence[Label], model: Verdict | None) -> Decision | None:
    if not labels:
        return None
    kinds = set(labels)
    if kinds == {Label.FAKE}:
        return Decision(Verdict.FAKE, VerdictSource.MATCH, None)
    if kinds == {Label.REAL} and model == Verdict.REAL:
        return Decision(Verdict.REAL, VerdictSource.MATCH, None)
    # A real label never clears a copy the model doubts (a face swap of a cleared photo is a near-copy of it),
    # and labels that disagree settle nothing.
    return Decision(Verdict.UNCERTAIN, VerdictSource.MATCH, None)


def _by_capture(trusted_capture: bool, model: Verdict | None) -> Decision | None:
    if not trusted_capture:
        return None
    return Decision(Verdict.UNCERTAIN if model == Verdict.FAKE else Verdict.REAL, VerdictSource.PROVENANCE, None)


# What each verdict says, in the words every client shows (docs/detector.md). The model finds generator traces or
# does not: a low score is "no AI traces found", never a claim that the image is authentic.
VERDICT_WORDS = {Verdict.FAKE: "AI traces found", Verdict.REAL: "no AI traces found",
                 Verdict.UNCERTAIN: "uncertain"}


def verdict_wording(decision: Decision) -> str | None:
    """The verdict in words: the out-of-scope reason when there is one, else the verdict's words with the
    confidence when the model decided ("no AI traces found (83%)")."""
    if decision.verdict is None:
        return None
    if decision.reason:
        return f"uncertain: {decision.reason}"
    words = VERDICT_WORDS[decision.verdict]
    return f"{words} ({decision.confidence:.0%})" if decision.confidence is not None else words
