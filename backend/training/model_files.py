"""A model version's files travel through the object store and the database, never through a shared disk.

A version is a list of files, each a (name, SHA-256) pair recorded in its row (``details["version_files"]``), the
model file first: the ``.keras``, its metadata JSON, and any further file its metadata lists under ``"files"``
(an exported inference file, for one: core.model_metadata.model_files reads that list), each beside the model.
Registering a version publishes every file to the
models area of the store under ``<version name>/<file name>``; a worker fetches them into its own cache, checks each
SHA-256 against the row, and loads the model only from files that matched. A file that is missing or does not match
is an error: a worker never scores with a model it cannot verify."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from backend.settings import Settings
from backend.storage.schema import ModelVersion
from backend.storage.store import MODELS, FolderStore, ObjectStore, open_store, write_atomically
from core.errors import FakewatchError, NotFound
from core.model_metadata import file_sha256, metadata_path, model_files

log = logging.getLogger("fakewatch.models")

FILES_KEY = "version_files"


class ModelUnverified(FakewatchError):
    """A version's files could not be fetched or did not match the SHA-256 its row records."""

    def __init__(self, message: str) -> None:
        super().__init__("model_unavailable", message, 503)


def version_file_paths(model_path: Path) -> list[Path]:
    """The files that make the version saved at ``model_path``, the model first: the model, its metadata JSON, and
    the further files its metadata lists (core.model_metadata.model_files: an exported inference file), all beside it.
    The list's "keras" entry is the model itself, whatever name the version was saved under."""
    paths = [model_path, metadata_path(model_path)]
    paths += [entry.path for entry in model_files(model_path) if entry.role != "keras" and entry.path not in paths]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise FakewatchError("invalid_model", f"{model_path.name} lacks the file(s) beside it: {', '.join(missing)}.")
    return paths


def describe_files(paths: list[Path]) -> list[dict[str, str]]:
    """What the database records of a version's files: each name with its SHA-256."""
    return [{"name": path.name, "sha256": file_sha256(path)} for path in paths]


def publish(store: ObjectStore, version_name: str, paths: list[Path]) -> None:
    """Put a version's files into the models area of the store (a file already in place is left alone)."""
    for path in paths:
        key = f"{version_name}/{path.name}"
        if isinstance(store, FolderStore) and store.path(key).resolve() == path.resolve():
            continue
        store.put(key, path.read_bytes())


def version_files(version: ModelVersion) -> list[tuple[str, str]]:
    """(name, SHA-256) of each file of a version, the model first. A version registered before files were
    recorded names its model file alone (its metadata is written from the row's own copy)."""
    recorded = (version.details or {}).get(FILES_KEY)
    if recorded:
        return [(str(item["name"]), str(item["sha256"])) for item in recorded]
    return [(Path(version.file).name, version.sha256)]


def model_cache_dir(settings: Settings) -> Path:
    return settings.data_path / "model-cache"


def fetch_verified(version: ModelVersion, settings: Settings) -> Path:
    """The version's model file in this host's cache, every file of it fetched and checked against its recorded
    SHA-256 (a cached file is checked again before use). ModelUnverified when any file is missing or differs."""
    folder = model_cache_dir(settings) / version.name
    files = version_files(version)
    for name, sha256 in files:
        target = folder / name
        if target.is_file() and file_sha256(target) == sha256:
            continue
        data = _read_source(version, name, settings)
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise ModelUnverified(f"{name} of model version {version.name} does not match its recorded SHA-256 "
                                  f"({found[:12]}… instead of {sha256[:12]}…): it was not loaded.")
        write_atomically(target, data)
    if (version.details or {}).get(FILES_KEY) is None:
        # An older row: the metadata comes from the database's copy of it (the model file itself was verified).
        import json  # noqa: PLC0415

        write_atomically(metadata_path(folder / files[0][0]), json.dumps(version.details or {}).encode())
    return folder / files[0][0]


def _read_source(version: ModelVersion, name: str, settings: Settings) -> bytes:
    """A file of the version from the store; a version registered from a local folder (the embedded default)
    may still be read beside its model file."""
    try:
        return open_store(settings, MODELS).read(f"{version.name}/{name}")
    except NotFound:
        pass
    except Exception as error:
        raise ModelUnverified(f"The files of model version {version.name} could not be fetched: {error}") from error
    beside = Path(version.file).parent / name
    if not version.file.startswith("s3://") and beside.is_file():
        return beside.read_bytes()
    raise ModelUnverified(f"{name} of model version {version.name} is in neither the store nor {beside.parent}.")


def files_present(version: ModelVersion, store: ObjectStore | None) -> bool:
    """Whether the version's model file can be fetched: from the store, or beside its registered path. Without a
    store to ask, a version published to a bucket counts as present (it was put there before its row was written;
    the worker's SHA-256 check still guards every load)."""
    in_store = store is not None and store.exists(f"{version.name}/{version_files(version)[0][0]}")
    if version.file.startswith("s3://"):
        return store is None or in_store
    return Path(version.file).is_file() or in_store
