"""What a retraining run reports across modules, typed: the candidate-vs-active comparison the training worker
measures (stored as JSON in the run's progress, read by the promotion guard, the console and ``fakewatch retrain``)
and the run's result (what the training task returns). Serialised at the edge with ``to_dict``/``from_dict``; the
JSON keeps the shape the API documents (backend/shapes.py's ComparisonOut)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.enums import RunStatus

# The evaluation set of reviewed images no run trains on (backend/training/data.py's hash split): the one the
# promotion guard reads.
HELDOUT_SET = "held-out reviewed images"

# A model's figures on one set, as models.metrics.compute_metrics writes them (JSON: counts, accuracy, roc_auc,
# fpr_at_threshold, ...); empty when not measured.
Metrics = dict[str, Any]


@dataclass(frozen=True)
class ComparedSet:
    """Both models' figures on one evaluation set of ``count`` images, each at its own threshold."""

    name: str
    count: int
    candidate: Metrics
    active: Metrics  # empty when no version was active

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "candidate": self.candidate, "active": self.active}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparedSet:
        return cls(name=str(data["name"]), count=int(data.get("count") or 0),
                   candidate=dict(data.get("candidate") or {}), active=dict(data.get("active") or {}))


@dataclass(frozen=True)
class Comparison:
    """The candidate beside the version active when it was measured, on the same images."""

    active_version: str | None
    candidate_version: str
    measured_at: str  # ISO 8601, seconds
    sets: tuple[ComparedSet, ...]

    @property
    def heldout(self) -> ComparedSet | None:
        """The held-out reviewed images' set, the one the promotion guard weighs."""
        return next((part for part in self.sets if part.name == HELDOUT_SET), None)

    def to_dict(self) -> dict[str, Any]:
        return {"active_version": self.active_version, "candidate_version": self.candidate_version,
                "measured_at": self.measured_at, "sets": [part.to_dict() for part in self.sets]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(active_version=data.get("active_version"), candidate_version=str(data.get("candidate_version", "")),
                   measured_at=str(data.get("measured_at", "")),
                   sets=tuple(ComparedSet.from_dict(part) for part in data.get("sets") or ()))


@dataclass(frozen=True)
class RunResult:
    """How a training task ended: the run, its status (``not claimed`` when another worker holds it) and the
    candidate it registered."""

    run: str
    status: RunStatus | str
    version: str | None = None

    def to_dict(self) -> dict[str, str]:
        """What the Celery task returns (JSON): ``{"run", "status"}`` and ``"version"`` once a candidate exists."""
        result = {"run": self.run, "status": str(self.status)}
        return result | {"version": self.version} if self.version is not None else result
