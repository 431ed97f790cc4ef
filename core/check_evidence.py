"""The evidence records a check carries besides its score, typed: the labelled near-copy it matched (rule 3's
evidence, found by backend.matching) and the detector's per-crop regions (the heat map, from models.serving). They
cross from the matcher and the model through the worker to the check service, which stores them as JSON
(``checks.match``, ``checks.regions``) in the shape the API returns (backend/shapes.py's MatchOut and RegionOut)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.enums import Label


@dataclass(frozen=True)
class NearCopyMatch:
    """The nearest labelled near-copy of a check's image, and every label among the near-copies found."""

    sha256: str | None  # None for a hash from an imported list: no image is stored for it
    distance: int  # Hamming distance of the PDQ hashes, of 256 bits
    label: Label  # the nearest one's latest label
    by: str | None
    at: str | None  # ISO 8601 in UTC
    labels: tuple[Label, ...]  # sorted by value
    pdq_hex: str | None  # None for a video's match (its frames matched, docs/video.md)
    count: int
    # A video matched under vPDQ's rule: "vpdq", with the shares of each side's frames that found a match.
    kind: str | None = None
    query_matched: float | None = None
    compared_matched: float | None = None

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"sha256": self.sha256, "distance": self.distance, "label": self.label.value, "by": self.by,
                 "at": self.at, "labels": [label.value for label in self.labels], "pdq_hex": self.pdq_hex,
                 "count": self.count}
        if self.kind is not None:
            shown |= {"kind": self.kind, "query_matched": self.query_matched, "compared_matched": self.compared_matched}
        return shown

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NearCopyMatch:
        """A stored match; one recorded before every label was kept carries the nearest one's only."""
        labels = data.get("labels") or [data["label"]]
        return cls(sha256=data.get("sha256"), distance=int(data.get("distance", 0)), label=Label(data["label"]),
                   by=data.get("by"), at=data.get("at"), labels=tuple(Label(label) for label in labels),
                   pdq_hex=data.get("pdq_hex"), count=int(data.get("count") or len(labels)), kind=data.get("kind"),
                   query_matched=data.get("query_matched"), compared_matched=data.get("compared_matched"))


@dataclass(frozen=True)
class Region:
    """One crop the model scored: its box ``(x0, y0, x1, y1)`` in the image's pixels and its P(fake)."""

    box: tuple[int, int, int, int]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Region:
        x0, y0, x1, y1 = (int(value) for value in data["box"])
        return cls(box=(x0, y0, x1, y1), score=float(data["score"]))


def regions_to_json(regions: Sequence[Region] | None) -> list[dict[str, Any]] | None:
    return [region.to_dict() for region in regions] if regions is not None else None


def regions_from_json(stored: Sequence[Mapping[str, Any]] | None) -> tuple[Region, ...] | None:
    return tuple(Region.from_dict(region) for region in stored) if stored is not None else None
