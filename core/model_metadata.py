"""Where a model version's files are and what its metadata JSON says, without TensorFlow.

The backend registers versions from these files (it never imports TensorFlow), and training (models/) writes them,
so both sides use these functions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# The shipped default model, committed in the repository beside the Keras code (see models/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "shipped" / "default.keras"


def metadata_path(model_path: str | Path) -> Path:
    """The metadata JSON beside a model file: same stem, ``.json``."""
    return Path(model_path).with_suffix(".json")


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """A model's metadata."""
    metadata: dict[str, Any] = json.loads(metadata_path(model_path).read_text())
    return metadata


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
