"""What a training run trains on: the base dataset folders, and every reviewed image with its latest label, split
into train and held-out by the image's own hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.settings import Settings
from backend.storage.schema import Image, Review
from backend.storage.store import image_store, local_copy
from core.enums import Label
from core.model_metadata import SHIPPED_MODEL, metadata_path, read_metadata

Item = tuple[Path, int]  # (image file, Label.target): the shape models.train takes


@dataclass
class TrainingData:
    """What a run trains on: base dataset folders, and reviewed images split into train and held-out."""

    base_datasets: list[Path] = field(default_factory=list)
    train: list[Item] = field(default_factory=list)
    heldout: list[Item] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"base_datasets": [str(path) for path in self.base_datasets],
                "reviewed_train": _count_labels(self.train), "reviewed_heldout": _count_labels(self.heldout)}


def _count_labels(items: list[Item]) -> dict[str, int]:
    return {label.value: sum(1 for _, target in items if target == label.target) for label in Label}


def base_datasets(settings: Settings) -> list[Path]:
    """The configured base datasets (``none``: reviewed images only), or by default those the shipped model was
    trained on; only folders present on disk."""
    if [name.lower() for name in settings.training_datasets] == ["none"]:
        return []
    names = list(settings.training_datasets) or _shipped_model_datasets()
    return [Path(name) for name in names if Path(name).is_dir()]


def _shipped_model_datasets() -> list[str]:
    if not metadata_path(SHIPPED_MODEL).is_file():
        return []
    training_data = read_metadata(SHIPPED_MODEL).get("training_data") or {}
    return [str(name) for name in training_data.get("datasets", [])]


def is_heldout(sha256: str, percent: int) -> bool:
    """Held out by the image's own hash: the same image stays on the same side in every run, whatever else changes."""
    return int(sha256[:8], 16) % 100 < percent


def reviewed_images(session: Session) -> list[tuple[Image, Label]]:
    """Every reviewed image with its latest label (a later review overrides an earlier one)."""
    rows = session.execute(select(Review.image_id, Review.label).order_by(Review.created_at, Review.id)).all()
    latest = {image_id: label for image_id, label in rows}
    if not latest:
        return []
    # A deleted image is never trained on (its bytes are gone, and it was deleted on request or by retention).
    images = session.scalars(select(Image).where(Image.id.in_(latest), Image.deleted_at.is_(None))
                             .order_by(Image.sha256))
    return [(image, Label(latest[image.id])) for image in images]


def assemble_training_data(session: Session, settings: Settings) -> TrainingData:
    """Base datasets plus reviewed images, split deterministically into train and held-out by SHA-256."""
    data = TrainingData(base_datasets=base_datasets(settings))
    for image, label in reviewed_images(session):
        # Training reads files: with a bucket store, a verified copy in a local cache.
        path = local_copy(image.storage_key, image_store(settings), settings.data_path / "cache" / "images")
        item = (path, label.target)
        (data.heldout if is_heldout(image.sha256, settings.training_heldout_percent) else data.train).append(item)
    return data
