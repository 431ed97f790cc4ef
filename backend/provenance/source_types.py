"""The IPTC NewsCodes digital source type vocabulary (https://cv.iptc.org/newscodes/digitalsourcetype/), which
both IPTC/XMP metadata and C2PA actions use, mapped to what each term says about an image.

"edited" stands for "neither a camera original nor AI-made": human edits and composites of real captures,
but also digital art, screenshots and charts. Only "ai" and "capture" move a verdict.
"""

from __future__ import annotations

from backend.provenance.evidence import Says

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

SOURCE_TYPES: dict[str, Says] = {
    # Made by a model or an algorithm, in whole or in part.
    "trainedAlgorithmicMedia": "ai",
    "compositeWithTrainedAlgorithmicMedia": "ai",
    "algorithmicMedia": "ai",
    "compositeSynthetic": "ai",
    # C2PA's own term (http://c2pa.org/digitalsourcetype/...) for model output that is data, not media.
    "trainedAlgorithmicData": "ai",
    # Originals from a camera or a film scanner.
    "digitalCapture": "capture",
    "computationalCapture": "capture",
    "negativeFilm": "capture",
    "positiveFilm": "capture",
    # Everything else a person or a program made from captures, or without one.
    "print": "edited",  # a scan of a print, which may show anything
    "humanEdits": "edited",
    "minorHumanEdits": "edited",
    "algorithmicallyEnhanced": "edited",
    "compositeCapture": "edited",
    "composite": "edited",
    "digitalCreation": "edited",
    "digitalArt": "edited",  # the older name of digitalCreation
    "softwareImage": "edited",  # retired term, still written by older tools
    "dataDrivenMedia": "edited",
    "screenCapture": "edited",
    "virtualRecording": "edited",
}
_BY_LOWER = {term.lower(): term for term in SOURCE_TYPES}


def classify_source_type(value: str) -> tuple[str, Says | None]:
    """The IPTC term for a URI or bare term as written (any case), and what it says (None if unknown)."""
    text = value.strip()
    term = text.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    known = _BY_LOWER.get(term.lower())
    if known is None:
        return text[:200], None
    return known, SOURCE_TYPES[known]
