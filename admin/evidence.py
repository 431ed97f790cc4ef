"""How the console words a verdict and the evidence beside it, the same on queue cards and the Image page:
verdict, score (P(fake)) and confidence (P(verdict's class), or the evidence that decided instead), the verdict
source, and the provenance signals and near-duplicate match where a check has them. Everything here is plain
text: page URLs, signal details and names come from outside and are never rendered as markdown."""

from __future__ import annotations

from typing import Any

from core.enums import Verdict, VerdictSource

SOURCE_WORDS = {VerdictSource.MODEL: "the model's score", VerdictSource.PROVENANCE: "provenance in the file",
                VerdictSource.MATCH: "a near-duplicate of a labelled image",
                VerdictSource.REVIEW: "a moderator's review"}


def verdict_line(verdict: Verdict | str | None, score: float | None, confidence: float | None,
                 source: VerdictSource | str | None, reason: str | None = None) -> str:
    """"fake · score 0.830 · confidence 83% · decided by the model's score", and the policy's reason when it gave
    one ("... · out of scope: flat or near-empty image")."""
    parts = [str(verdict or "no verdict"), "score n/a" if score is None else f"score {score:.3f}"]
    parts.append("confidence n/a (evidence decided)" if confidence is None else f"confidence {confidence:.0%}")
    if source:
        parts.append(f"decided by {SOURCE_WORDS.get(VerdictSource(source), str(source))}")
    if reason:
        parts.append(reason)
    return " · ".join(parts)


def evidence_lines(provenance: dict[str, Any] | None, match: dict[str, Any] | None) -> list[str]:
    """One line per provenance signal and for the near-duplicate match, when there are any."""
    lines = []
    c2pa = (provenance or {}).get("c2pa")
    if c2pa:
        lines.append(f"Content Credentials: {c2pa.get('state')} (signer {c2pa.get('signer') or 'unknown'})")
    for signal in (provenance or {}).get("signals") or []:
        says = f" [{signal.get('says')}]" if signal.get("says") else ""
        lines.append(f"Provenance{says}: {signal.get('detail', '')} ({signal.get('source', '')})")
    if match:
        lines.append(f"Near-duplicate of an image labelled {match.get('label')} (distance {match.get('distance')}, "
                     f"by {match.get('by')})")
    return lines
