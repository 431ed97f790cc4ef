"""read_provenance: the evidence in an image's original bytes, before anything decodes or re-encodes them."""

from __future__ import annotations

from collections.abc import Sequence

from backend.provenance.c2pa_evidence import has_manifest_marker, read_c2pa
from backend.provenance.containers import sniff, walk
from backend.provenance.errors import InputTooLarge
from backend.provenance.evidence import Provenance, Signal
from backend.provenance.fields import MetadataField
from backend.provenance.limits import Budget, ProvenanceLimits
from backend.provenance.metadata_evidence import read_blocks, signals_from_fields
from backend.provenance.signatures import match_signatures

C2PA_MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                   "TIFF": "image/tiff", "HEIF": "image/heic", "AVIF": "image/avif", "MP4": "video/mp4",
                   "MOV": "video/quicktime"}
DEFAULT_LIMITS = ProvenanceLimits()


def read_provenance(data: bytes, *, trust_anchors_pem: str | None = None,
                    limits: ProvenanceLimits = DEFAULT_LIMITS, extra_fields: Sequence[MetadataField] = ()) -> Provenance:
    """Content Credentials and metadata evidence in ``data``; never fails on what the metadata holds.

    Raises InputTooLarge when ``data`` is over ``limits.max_input_bytes``, and TrustAnchorsError when the
    anchors are not certificates; anything wrong inside the file becomes a signal that says nothing.
    ``extra_fields``: metadata read elsewhere (a video's container tags), matched like the file's own.
    """
    if len(data) > limits.max_input_bytes:
        raise InputTooLarge(len(data), limits.max_input_bytes)
    container = sniff(data)
    budget = Budget(limits)
    found = walk(data, container, budget)
    fields, problems = read_blocks(found.blocks, limits)
    fields = [*fields, *extra_fields]
    signals = found.problems + problems
    c2pa = None
    if container in C2PA_MIME_TYPES and has_manifest_marker(data):
        c2pa, c2pa_signals, c2pa_fields = read_c2pa(data, C2PA_MIME_TYPES[container], trust_anchors_pem, limits)
        # The manifest's own tool names (claim generator, software agents) go through the same table.
        signals = c2pa_signals + [s for _, s in match_signatures(c2pa_fields, limits.max_match_chars)] + signals
    signals += signals_from_fields(fields, limits)
    # Evidence first, reading problems after, so the cap on signals never drops a claim.
    ordered = [s for s in signals if s.says is not None] + [s for s in signals if s.says is None]
    return Provenance(c2pa=c2pa, signals=tuple(_unique(ordered)[: limits.max_signals]))


def _unique(signals: list[Signal]) -> list[Signal]:
    """The first of signals that say the same thing (a tool name is often in EXIF and XMP both); one from the
    manifest and one from outside it are both kept, since an invalid manifest's claims count differently."""
    seen: set[tuple[object, ...]] = set()
    kept = []
    for signal in signals:
        key = (signal.kind, signal.says, signal.detail, signal.from_manifest)
        if key not in seen:
            seen.add(key)
            kept.append(signal)
    return kept
