"""Signals from metadata outside the C2PA manifest: IPTC digital source types and AI properties, the generator
signature table, camera EXIF, and a remote manifest reference. None of it is signed: it says what a tool or a
person wrote, which anyone can also strip or copy."""

from __future__ import annotations

from collections.abc import Iterable

from backend.provenance.containers import Block
from backend.provenance.evidence import Signal
from backend.provenance.exif import read_exif
from backend.provenance.fields import MetadataField, Role
from backend.provenance.limits import ProvenanceLimits
from backend.provenance.signatures import match_signatures
from backend.provenance.source_types import classify_source_type
from backend.provenance.xmp import read_xmp

# PNG text keywords by role; any other keyword holds a generator's own settings ("parameters", "prompt"...).
PNG_TOOL_KEYS = frozenset({"software", "source", "model", "generator", "make"})
PNG_CAPTION_KEYS = frozenset({"description", "title", "comment", "author", "copyright", "disclaimer",
                              "warning", "artist", "com"})
CAMERA_NAME_CHARS = 64


def read_blocks(blocks: Iterable[Block], limits: ProvenanceLimits) -> tuple[list[MetadataField], list[Signal]]:
    """Fields from every metadata block, and the problems met reading them."""
    fields: list[MetadataField] = []
    problems: list[Signal] = []
    for block in blocks:
        if block.kind == "exif":
            found, trouble = read_exif(block.data, block.source)
        elif block.kind == "xmp":
            found, trouble = read_xmp(block.data, block.source, limits)
        else:
            found, trouble = [_text_field(block)], []
        fields += found
        problems += trouble
    return fields[: limits.max_fields], problems


def _text_field(block: Block) -> MetadataField:
    role: Role = ("tool" if block.key.lower() in PNG_TOOL_KEYS
                  else "caption" if block.key.lower() in PNG_CAPTION_KEYS else "params")
    return MetadataField(block.source, block.key, block.data.decode(block.encoding, "replace"), role)


def signals_from_fields(fields: list[MetadataField], limits: ProvenanceLimits) -> list[Signal]:
    signals = [signal for field in fields for signal in _named_evidence(field)]
    matched_sources = set()
    for _row, signal in match_signatures(fields, limits.max_match_chars):
        signals.append(signal)
        matched_sources.add(signal.source)
    camera = _camera(fields, matched_sources)
    if camera:
        signals.append(camera)
    return signals


def _named_evidence(field: MetadataField) -> list[Signal]:
    if field.key == "Iptc4xmpExt:DigitalSourceType":
        term, says = classify_source_type(field.value)
        return [Signal("iptc_source_type", says, f"IPTC digital source type: {term}", field.source)] if says else []
    if field.key == "Iptc4xmpExt:AISystemUsed":
        return [Signal("iptc_ai_system", "ai", f"IPTC AI system used: {_short(field.value)}", field.source)]
    if field.key == "Iptc4xmpExt:AIPromptInformation":
        return [Signal("iptc_ai_system", "ai", "IPTC AI prompt information present", field.source)]
    if field.key == "dcterms:provenance":
        return [Signal("remote_manifest", None, f"Content Credentials stored at {_short(field.value)}: not "
                                                "fetched (the reader works offline)", field.source)]
    return []


def _camera(fields: list[MetadataField], matched_sources: set[str]) -> Signal | None:
    """An EXIF camera make and model: says capture, unsigned (the policy never trusts it; a person may)."""
    make = next((f for f in fields if f.key == "Make" and f.source.endswith("exif Make")), None)
    if make is None or make.source in matched_sources:
        return None
    model = next((f for f in fields if f.key == "Model" and f.source.endswith("exif Model")), None)
    if model is not None and model.source in matched_sources:
        return None
    name = make.value
    if model is not None and model.value:
        # Models usually repeat the make ("Canon" / "Canon EOS R5").
        name = model.value if model.value.lower().startswith(make.value.lower()) else f"{name} {model.value}"
    if len(name) > 2 * CAMERA_NAME_CHARS or not name.isprintable() or "{" in name:
        return None
    return Signal("camera", "capture", f"Camera: {name} (unsigned EXIF, easily copied)", make.source)


def _short(text: str, size: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "\u2026"
