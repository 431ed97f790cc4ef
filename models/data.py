"""Datasets on disk: the seed layout ``DATASET/{train,valid,test}/{real,fake}/`` (or a bare ``{real,fake}/``
folder), read into memory once. Labels come from the class folder only, never from file names (the Photoshop
set's names spell the class out)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from core.enums import Label
from models.preprocessing import decode_image_file

log = logging.getLogger(__name__)

# Class folder name -> label: 0 real, 1 fake.
CLASSES = {label.value: label.target for label in Label}
Item = tuple[Path, int]  # (image file, label: 0 real, 1 fake)


@dataclass
class LoadedImages:
    """Decoded images with their labels, and the files that could not be decoded."""

    images: list[Image.Image] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def class_root(dataset_dir: Path, split: str) -> Path:
    """The folder holding ``real/`` and ``fake/`` for a split; a bare ``{real,fake}/`` folder is its own root."""
    split_dir = dataset_dir / split
    if any((split_dir / name).is_dir() for name in CLASSES):
        return split_dir
    if any((dataset_dir / name).is_dir() for name in CLASSES):
        return dataset_dir
    raise FileNotFoundError(f"{dataset_dir} has neither {split}/{{real,fake}}/ nor {{real,fake}}/")


def list_items(dataset_dir: str | Path, split: str) -> list[Item]:
    """Every file of a split with its label from its class folder, in a stable order."""
    root = class_root(Path(dataset_dir), split)
    items: list[Item] = []
    for name, label in CLASSES.items():
        folder = root / name
        if folder.is_dir():
            items += [(path, label) for path in sorted(folder.iterdir()) if path.is_file()]
    return items


def list_many(dataset_dirs: Iterable[str | Path], split: str) -> list[Item]:
    """The items of one split across several datasets; a dataset without that split adds nothing."""
    items: list[Item] = []
    for dataset_dir in dataset_dirs:
        try:
            items += list_items(dataset_dir, split)
        except FileNotFoundError:
            log.warning("%s has no %s split; skipped", dataset_dir, split)
    return items


def _read_or_error(path: Path) -> Image.Image | str:
    try:
        image = decode_image_file(path)
        image.load()
        return image
    except Exception as error:  # noqa: BLE001 - any decoder failure: report and skip, never fatal
        return f"{type(error).__name__}: {error}"


def load_items(items: Sequence[Item], workers: int = 4) -> LoadedImages:
    """Decode items in threads (Pillow releases the GIL while decoding); corrupt files are logged and skipped."""
    loaded = LoadedImages()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (path, label), result in zip(items, pool.map(lambda item: _read_or_error(item[0]), items), strict=True):
            if isinstance(result, str):
                log.warning("skipped %s: %s", path, result)
                loaded.skipped.append((path, result))
                continue
            loaded.images.append(result)
            loaded.labels.append(label)
    return loaded


def describe(items: Sequence[Item]) -> dict[str, int]:
    """Counts per class, for metadata and logs."""
    return {name: sum(1 for _, label in items if label == value) for name, value in CLASSES.items()}
