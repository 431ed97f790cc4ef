"""Where a model version's files are and what its metadata JSON says, without TensorFlow.

The backend registers versions from these files (it never imports TensorFlow), and training (models/) writes them,
so both sides use these functions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import FakewatchError

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


# --- a model version's files ------------------------------------------------------------------------------------
# A version is its metadata JSON plus the files it lists under "files": the ``.keras`` model of record and, once
# exported (models/export.py), the file the serving runtime scores with. Each entry names a file beside the metadata
# and its SHA-256, so whoever copies a version (to another worker, to object storage) knows what to copy and can
# check it. "runtime" says which listed file the workers serve and in which format.


@dataclass(frozen=True)
class ModelFile:
    """One file of a model version: its path (beside the metadata JSON), its role and its SHA-256."""

    path: Path
    role: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path.name, "role": self.role, "sha256": self.sha256, "size_bytes": self.size_bytes}


class ModelFileMismatch(FakewatchError):
    """A model file whose bytes are not the ones its version recorded: damaged, truncated or replaced."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__("invalid_model",
                         f"{path} does not match the SHA-256 its model version recorded (expected {expected[:12]}..., "
                         f"found {actual[:12]}...): the file is damaged or was replaced. Export it again "
                         "(`fakewatch export-model`) or restore it; it will not be loaded.")


def describe_file(path: str | Path, role: str) -> ModelFile:
    """A file's entry for a version's list, hashed now."""
    path = Path(path)
    return ModelFile(path=path, role=role, sha256=file_sha256(path), size_bytes=path.stat().st_size)


def model_files(model_path: str | Path, metadata: dict[str, Any] | None = None) -> list[ModelFile]:
    """The files of the version whose ``.keras`` is ``model_path``: those its metadata lists (paths resolved beside
    it), or, for metadata written before the list existed, the ``.keras`` with its recorded SHA-256."""
    model_path = Path(model_path)
    metadata = metadata if metadata is not None else read_metadata(model_path)
    listed = metadata.get("files")
    if not listed:
        return [ModelFile(path=model_path, role="keras", sha256=str(metadata.get("sha256", "")),
                          size_bytes=int(metadata.get("size_bytes", 0)))]
    return [ModelFile(path=model_path.parent / str(entry["path"]), role=str(entry["role"]),
                      sha256=str(entry["sha256"]), size_bytes=int(entry.get("size_bytes", 0))) for entry in listed]


def runtime_file(model_path: str | Path, metadata: dict[str, Any] | None = None) -> ModelFile | None:
    """The exported file the serving runtime loads (``metadata["runtime"]["format"]`` names its role), if any."""
    metadata = metadata if metadata is not None else read_metadata(model_path)
    fmt = (metadata.get("runtime") or {}).get("format")
    return next((entry for entry in model_files(model_path, metadata) if entry.role == fmt), None) if fmt else None


def verified_bytes(entry: ModelFile) -> bytes:
    """A model file's bytes, read once and checked against the SHA-256 its version recorded."""
    data = entry.path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if entry.sha256 and actual != entry.sha256:
        raise ModelFileMismatch(entry.path, entry.sha256, actual)
    return data
