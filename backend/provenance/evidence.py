"""The provenance a check carries (docs/provenance.md: ``{"c2pa": {...} | null, "signals": [...]}``) and the facts
the verdict policy reads from it.

A signal's ``says`` is "ai", "edited" or "capture"; a signal that only reports a reading problem (an
unreadable manifest, metadata too large to read) says ``None``: it is shown, and it decides nothing.
Signals read from the C2PA manifest have a ``source`` that starts with "c2pa", so the policy facts can be
computed again from the stored JSON alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Says = Literal["ai", "edited", "capture"]
# "valid": the signature checks out and the signer is in the trust list; "untrusted": the signature checks out
# but the signer is not in the trust list (anyone can make a certificate); "invalid": the manifest does not
# validate (tampered, mismatched hash, broken signature), so nothing it says is verified.
C2paState = Literal["valid", "untrusted", "invalid"]


class PolicyFacts(TypedDict):
    """What core.policy.Evidence takes from provenance (rules 2 and 4)."""

    declares_ai: bool
    invalid_manifest_claims_ai: bool
    invalid_manifest: bool
    trusted_capture: bool


@dataclass(frozen=True)
class Signal:
    kind: str  # c2pa_source_type, c2pa_action, iptc_source_type, iptc_ai_system, generator, editor, camera,
    #            unreadable, too_large, remote_manifest
    says: Says | None
    detail: str  # for a person: what was found
    source: str  # where: "c2pa", "c2pa ingredient 'A.jpg'", "xmp Iptc4xmpExt:DigitalSourceType", "exif Software"

    @property
    def from_manifest(self) -> bool:
        return self.source == "c2pa" or self.source.startswith("c2pa ")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "says": self.says, "detail": self.detail, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signal:
        return cls(kind=data["kind"], says=data.get("says"), detail=data.get("detail", ""),
                   source=data.get("source", ""))


@dataclass(frozen=True)
class SourceType:
    """One digital source type found on an action in the manifest chain."""

    type: str  # the IPTC term ("trainedAlgorithmicMedia") or the URI as written when it is not one we know
    says: Says | None
    action: str  # "c2pa.created"
    manifest: str  # "active" or "ingredient 'title'"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "says": self.says, "action": self.action, "manifest": self.manifest}


@dataclass(frozen=True)
class C2paEvidence:
    state: C2paState
    signer: str | None  # the signing certificate's common name
    issuer: str | None  # its organisation
    signed_at: str | None  # the trusted timestamp, when there is one
    claim_generator: str | None
    source_types: tuple[SourceType, ...] = ()
    errors: tuple[str, ...] = ()  # C2PA validation failure codes ("claimSignature.mismatch", ...)
    summary: str = ""  # "signed by C2PA Signer (C2PA Test Signing Cert), not in your trust list"

    @property
    def trusted(self) -> bool:
        return self.state == "valid"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "trusted": self.trusted, "signer": self.signer, "issuer": self.issuer,
                "signed_at": self.signed_at, "claim_generator": self.claim_generator,
                "digital_source_types": [t.to_dict() for t in self.source_types],
                "errors": list(self.errors), "summary": self.summary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> C2paEvidence:
        return cls(state=data["state"], signer=data.get("signer"), issuer=data.get("issuer"),
                   signed_at=data.get("signed_at"), claim_generator=data.get("claim_generator"),
                   source_types=tuple(SourceType(**t) for t in data.get("digital_source_types", [])),
                   errors=tuple(data.get("errors", [])), summary=data.get("summary", ""))


@dataclass(frozen=True)
class Provenance:
    c2pa: C2paEvidence | None = None
    signals: tuple[Signal, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"c2pa": self.c2pa.to_dict() if self.c2pa else None,
                "signals": [s.to_dict() for s in self.signals]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Provenance:
        """Read back what ``to_dict`` stored (None, as an older check has, reads as no evidence)."""
        if not data:
            return cls()
        c2pa = data.get("c2pa")
        return cls(c2pa=C2paEvidence.from_dict(c2pa) if c2pa else None,
                   signals=tuple(Signal.from_dict(s) for s in data.get("signals", [])))

    def _manifest_invalid(self) -> bool:
        return self.c2pa is not None and self.c2pa.state == "invalid"

    @property
    def declares_ai(self) -> bool:
        """Something in the file says it is AI-made: a C2PA source type or generator (trusted signer or not),
        an IPTC digital source type, a generator's own metadata. An invalid manifest's claims do not count
        here (see ``invalid_manifest_claims_ai``); metadata outside the manifest still does."""
        return any(s.says == "ai" and not (s.from_manifest and self._manifest_invalid()) for s in self.signals)

    @property
    def invalid_manifest_claims_ai(self) -> bool:
        """A manifest that fails validation says AI: never real, at least uncertain (verdict rule 2,
        docs/architecture.md)."""
        return self._manifest_invalid() and any(s.says == "ai" and s.from_manifest for s in self.signals)

    @property
    def trusted_capture(self) -> bool:
        """A valid manifest from a signer in the trust list declares a capture (in the active manifest or an
        ingredient it vouches for) and nothing in it says AI (verdict rule 4, docs/architecture.md)."""
        if self.c2pa is None or not self.c2pa.trusted:
            return False
        from_manifest = [s for s in self.signals if s.from_manifest]
        return (any(s.says == "capture" for s in from_manifest)
                and not any(s.says == "ai" for s in from_manifest))

    def policy_facts(self) -> PolicyFacts:
        """What core.policy.Evidence takes from provenance, so every caller passes the same facts."""
        return {"declares_ai": self.declares_ai, "invalid_manifest_claims_ai": self.invalid_manifest_claims_ai,
                "invalid_manifest": self._manifest_invalid(), "trusted_capture": self.trusted_capture}

    def ai_evidence(self) -> list[str]:
        """Short names of what says AI, for a badge or a tooltip: ["Content Credentials", "OpenAI"]."""
        names: list[str] = []
        for s in self.signals:
            if s.says != "ai" or (s.from_manifest and self._manifest_invalid()):
                continue
            name = "Content Credentials" if s.kind == "c2pa_source_type" else s.detail.split(":", 1)[0]
            if name not in names:
                names.append(name)
        return names

    def summary(self) -> str:
        """One line for a tooltip, a CLI line, an export column or a queue card, strongest evidence first:
        "AI: Content Credentials, OpenAI"; "" when the file holds no evidence at all (which proves nothing)."""
        ai = self.ai_evidence()
        if ai:
            return "AI: " + ", ".join(ai)
        parts: list[str] = []
        if self.invalid_manifest_claims_ai:
            parts.append("AI claimed by invalid Content Credentials (not verified)")
        elif self.trusted_capture and self.c2pa is not None:
            parts.append(f"Capture: Content Credentials, {self.c2pa.summary}")
        elif self.c2pa is not None:  # "signed by X, not in your trust list" or "invalid Content Credentials (...)"
            said = self.c2pa.summary or self.c2pa.state
            parts.append(f"Content Credentials {said}" if said.startswith("signed") else said[:1].upper() + said[1:])
        for says, heading in (("edited", "Edited"), ("capture", "Capture")):
            names = _names(s for s in self.signals if s.says == says and not (
                self.c2pa is not None and s.from_manifest and says == "capture"))
            if names:
                parts.append(f"{heading}: " + ", ".join(names))
        problems = [s.detail for s in self.signals if s.says is None]
        if problems:
            parts.append("; ".join(problems))
        return "; ".join(parts)


def _names(signals: Iterable[Signal]) -> list[str]:
    """Short names of what signals found, each once: the tool or camera, not the whole detail."""
    names: list[str] = []
    for s in signals:
        if s.kind == "camera":  # "Camera: Canon EOS R5 (unsigned EXIF, easily copied)"
            name = s.detail.split(": ", 1)[-1].split(" (", 1)[0] + " (unsigned EXIF)"
        elif s.kind == "c2pa_action":  # "Content Credentials: c2pa.color_adjustments"
            name = s.detail.split(": ", 1)[-1]
        else:
            name = s.detail.split(":", 1)[0]
        if name not in names:
            names.append(name)
    return names
