"""Content Credentials (C2PA) read with c2pa-python, strictly offline.

c2pa-rs fetches a manifest stored at a remote URL by default, and can ask a certificate's OCSP responder
about revocation; both are turned off, and the allow-list of hosts it may reach is emptied as a second lock
(tests/test_provenance.py proves all three with a listener on loopback). The trust anchors are the caller's
PEM; without them every signer is "not in your trust list".
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from typing import Any

from backend.provenance.errors import TrustAnchorsError
from backend.provenance.evidence import C2paEvidence, C2paState, Signal, SourceType
from backend.provenance.fields import MetadataField
from backend.provenance.limits import ProvenanceLimits
from backend.provenance.source_types import classify_source_type

OFFLINE_SETTINGS: dict[str, Any] = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_trust": True,
               "verify_after_reading": True},
    "core": {"allowed_network_hosts": []},
}
# The start of every manifest store: a JUMBF description box ("jumd") whose UUID begins with "c2pa". Without
# it c2pa-rs finds no manifest either, so a file without it skips the native reader (most files: it keeps the
# reader's cost near zero for them).
MANIFEST_MARKER = b"jumdc2pa"
UNTRUSTED_CODE = "signingCredential.untrusted"
# Actions that change pixels: an edit, whatever tool made it (conversions and re-encodings are not edits).
EDIT_ACTIONS = frozenset({"c2pa.edited", "c2pa.color_adjustments", "c2pa.cropped", "c2pa.drawing",
                          "c2pa.filtered", "c2pa.orientation", "c2pa.placed", "c2pa.removed", "c2pa.resized",
                          "c2pa.redacted"})
STATES: dict[str, C2paState] = {"trusted": "valid", "valid": "untrusted", "invalid": "invalid"}


def has_manifest_marker(data: bytes) -> bool:
    return MANIFEST_MARKER in data


def check_trust_anchors(trust_anchors_pem: str | None) -> int:
    """How many certificates the anchors hold; TrustAnchorsError unless every block is one c2pa can load
    (for settings to call once at start-up, so a bad file is not read as "trust nobody")."""
    from cryptography import x509  # noqa: PLC0415 - only when anchors are configured

    if not trust_anchors_pem or not trust_anchors_pem.strip():
        return 0
    try:
        # c2pa-rs accepts a block that merely looks like base64 (it also takes certificate hashes), so the
        # certificates are parsed here first.
        count = len(x509.load_pem_x509_certificates(trust_anchors_pem.encode()))
    except ValueError as exc:
        raise TrustAnchorsError(f"The C2PA trust anchors are not PEM certificates: {exc}") from exc
    _offline_context(trust_anchors_pem).close()
    return count


def read_c2pa(data: bytes, mime: str, trust_anchors_pem: str | None, limits: ProvenanceLimits
              ) -> tuple[C2paEvidence | None, list[Signal], list[MetadataField]]:
    """The manifest's evidence, the signals it gives, and its tool fields (for the generator table)."""
    # Imported here: loading the native library costs ~150 ms, which commands that never read an image
    # (fakewatch --help) should not pay.
    import c2pa  # noqa: PLC0415 - the native library costs ~150 ms to load

    with _offline_context(trust_anchors_pem) as context:
        try:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context)
        except c2pa.C2paError.NotSupported:
            return None, [], []
        except c2pa.C2paError as exc:
            return None, [_reader_failure(str(exc))], []
        if reader is None:
            return None, [], []
        with reader:
            try:
                text = reader.json()
            except c2pa.C2paError as exc:
                return None, [_reader_failure(str(exc))], []
    if len(text) > limits.max_manifest_json_bytes:
        return None, [Signal("too_large", None, f"C2PA manifest store is over {limits.max_manifest_json_bytes} "
                                               "bytes; not read", "c2pa")], []
    try:
        return _evidence(json.loads(text), limits)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # The JSON's shape belongs to c2pa-python and has changed between versions: an unexpected one is a
        # manifest this reader cannot read, not a crash.
        return None, [Signal("unreadable", None, f"unreadable C2PA manifest store ({type(exc).__name__})",
                             "c2pa")], []


def _offline_context(trust_anchors_pem: str | None) -> Any:
    import c2pa  # noqa: PLC0415 - the native library costs ~150 ms to load

    settings = copy.deepcopy(OFFLINE_SETTINGS)
    if trust_anchors_pem and trust_anchors_pem.strip():
        if "-----BEGIN CERTIFICATE-----" not in trust_anchors_pem:
            raise TrustAnchorsError("The C2PA trust anchors are not PEM certificates "
                                    "(expected -----BEGIN CERTIFICATE----- blocks).")
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    try:
        return c2pa.Context.from_dict(settings)
    except c2pa.C2paError as exc:
        raise TrustAnchorsError(f"c2pa could not load the trust anchors: {exc}") from exc


def _reader_failure(message: str) -> Signal:
    if message.startswith(("Remote", "RemoteManifest")):
        return Signal("remote_manifest", None, "Content Credentials stored remotely: not fetched "
                                               "(the reader works offline)", "c2pa")
    return Signal("unreadable", None, f"unreadable C2PA manifest ({_short(message, 160)})", "c2pa")


def _evidence(store: dict[str, Any], limits: ProvenanceLimits
              ) -> tuple[C2paEvidence | None, list[Signal], list[MetadataField]]:
    manifests = store.get("manifests") or {}
    active = manifests.get(str(store.get("active_manifest")))
    if not isinstance(active, dict):
        return None, [Signal("unreadable", None, "unreadable C2PA manifest: no active manifest", "c2pa")], []
    codes = _failure_codes(store)
    state = STATES.get(str(store.get("validation_state", "")).lower()) or _state_from_codes(codes)
    signature = active.get("signature_info") or {}
    signer, issuer = signature.get("common_name"), signature.get("issuer")
    evidence = C2paEvidence(
        state=state, signer=signer, issuer=issuer, signed_at=signature.get("time"),
        claim_generator=_claim_generator(active),
        source_types=tuple(_source_types(manifests, active, limits)),
        errors=tuple(code for code in codes if code != UNTRUSTED_CODE),
        summary=_summary(state, signer, issuer, codes),
    )
    signals, fields = _signals_and_fields(manifests, active, evidence, limits)
    return evidence, signals, fields


def _failure_codes(store: dict[str, Any]) -> list[str]:
    # validation_status lists the failures of the active manifest; ingredient failures come as deltas.
    codes = [s.get("code", "") for s in store.get("validation_status") or []]
    for delta in (store.get("validation_results") or {}).get("ingredientDeltas") or []:
        codes += [s.get("code", "") for s in (delta.get("validationDeltas") or {}).get("failure") or []]
    return sorted({c for c in codes if c})


def _state_from_codes(codes: list[str]) -> C2paState:
    """For a store without validation_state (older c2pa-rs): any failure but an unknown signer is invalid."""
    if any(code != UNTRUSTED_CODE for code in codes):
        return "invalid"
    return "untrusted" if UNTRUSTED_CODE in codes else "valid"


def _summary(state: C2paState, signer: str | None, issuer: str | None, codes: list[str]) -> str:
    who = " ".join(filter(None, [signer, f"({issuer})" if issuer and issuer != signer else None])) \
        or "an unnamed signer"
    if state == "valid":
        return f"signed by {who}, in your trust list"
    if state == "untrusted":
        return f"signed by {who}, not in your trust list"
    failures = ", ".join(c for c in codes if c != UNTRUSTED_CODE)[:160]
    return f"invalid Content Credentials ({failures or 'failed validation'}): claimed signer {who}, not verified"


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    if isinstance(manifest.get("claim_generator"), str):
        return manifest["claim_generator"][:200]
    names = [f"{i.get('name', '')} {i.get('version', '')}".strip()
             for i in manifest.get("claim_generator_info") or [] if isinstance(i, dict)]
    return ", ".join(n for n in names if n)[:200] or None


def _walk(manifests: dict[str, Any], active: dict[str, Any], limits: ProvenanceLimits
          ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, manifest) for the active manifest and, depth first, the manifests of its ingredients."""
    seen: set[int] = set()
    stack: list[tuple[str, dict[str, Any]]] = [("active", active)]
    while stack and len(seen) < limits.max_manifests:
        where, manifest = stack.pop()
        if id(manifest) in seen:
            continue
        seen.add(id(manifest))
        yield where, manifest
        for ingredient in manifest.get("ingredients") or []:
            label = ingredient.get("active_manifest") if isinstance(ingredient, dict) else None
            child = manifests.get(label) if isinstance(label, str) else None
            if isinstance(child, dict):
                stack.append((f"ingredient '{_short(str(ingredient.get('title') or '?'), 60)}'", child))


def _actions(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for assertion in manifest.get("assertions") or []:
        if isinstance(assertion, dict) and str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                if isinstance(action, dict):
                    yield action


def _source_types(manifests: dict[str, Any], active: dict[str, Any], limits: ProvenanceLimits
                  ) -> Iterator[SourceType]:
    for where, manifest in _walk(manifests, active, limits):
        for action in _actions(manifest):
            value = action.get("digitalSourceType")
            if isinstance(value, str) and value:
                term, says = classify_source_type(value)
                yield SourceType(type=term, says=says, action=str(action.get("action", ""))[:80], manifest=where)


def _signals_and_fields(manifests: dict[str, Any], active: dict[str, Any], evidence: C2paEvidence,
                        limits: ProvenanceLimits) -> tuple[list[Signal], list[MetadataField]]:
    signals: list[Signal] = []
    fields: list[MetadataField] = []
    for t in evidence.source_types:
        if t.says is not None:
            signals.append(Signal("c2pa_source_type", t.says, f"Content Credentials: {t.action} as {t.type} "
                                  f"({evidence.summary})", _source(t.manifest)))
    for where, manifest in _walk(manifests, active, limits):
        source = _source(where)
        edits = sorted({str(a["action"]) for a in _actions(manifest) if a.get("action") in EDIT_ACTIONS})
        if edits:
            signals.append(Signal("c2pa_action", "edited", f"Content Credentials: {', '.join(edits)}", source))
        generator = _claim_generator(manifest)
        if generator:
            fields.append(MetadataField(f"{source} claim_generator", "claim_generator", generator, "tool"))
        for action in _actions(manifest):
            agent = action.get("softwareAgent")
            name = agent.get("name") if isinstance(agent, dict) else agent
            if isinstance(name, str) and name:
                fields.append(MetadataField(f"{source} softwareAgent", "softwareAgent", name[:200], "tool"))
    return signals, fields


def _source(where: str) -> str:
    return "c2pa" if where == "active" else f"c2pa {where}"


def _short(text: str, size: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "\u2026"
