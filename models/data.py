"""Datasets on disk: the seed layout ``DATASET/{train,valid,test}/{real,fake}/`` (or a bare ``{real,fake}/``
folder), read into memory once. Labels come from the class folder only, never from file names (the Photoshop
set's names spell the class out)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.enums import Label
from models.preprocessing import decode_image_file

log = logging.getLogger(__name__)

# Class folder name -> label: 0 real, 1 fake.
CLASSES = {label.value: label.target for label in Label}
SPLITS = ("train", "valid", "test")
Item = tuple[Path, int]  # (image file, label: 0 real, 1 fake)
# Items outside the seed layout (reviewed images from the store) form one group of their own.
OTHER_GROUP = "other"
# The share of training draws reviewed images get in a retrain (``shares={OTHER_GROUP: REVIEWED_SHARE}``): 200
# reviews among 4,500 base images would otherwise barely move the model, and all of them would be memorised.
REVIEWED_SHARE = 0.4


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


def load_items(items: Sequence[Item], workers: int = 4, cache: dict[Path, Image.Image] | None = None) -> LoadedImages:
    """Decode items in threads (Pillow releases the GIL while decoding); corrupt files are logged and skipped.
    ``cache``: decoded images by path, filled and reused (a benchmark that trains many folds decodes once)."""
    loaded = LoadedImages()
    cache = {} if cache is None else cache

    def decode(path: Path) -> Image.Image | str:
        if path not in cache:
            result = _read_or_error(path)
            if isinstance(result, str):
                return result
            cache[path] = result
        return cache[path]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (path, label), result in zip(items, pool.map(lambda item: decode(item[0]), items), strict=True):
            if isinstance(result, str):
                log.warning("skipped %s: %s", path, result)
                loaded.skipped.append((path, result))
                continue
            loaded.images.append(result)
            loaded.labels.append(label)
    return loaded


def dataset_of(path: Path) -> str:
    """The dataset a file belongs to, from the seed layout ``DATASET/SPLIT/CLASS/FILE`` (or ``DATASET/CLASS/FILE``);
    ``OTHER_GROUP`` for a file outside it."""
    parent = path.parent
    if parent.name in CLASSES:
        root = parent.parent.parent if parent.parent.name in SPLITS else parent.parent
        return root.name
    return OTHER_GROUP


def sampling_probabilities(
    items: Sequence[Item], temper: float = 0.5, shares: dict[str, float] | None = None
) -> np.ndarray:
    """Per-item sampling probabilities that give each class half the draws and, within a class, each dataset a
    share proportional to its size raised to ``temper`` (1: as many draws as images, 0: every dataset alike).
    ``shares`` gives named groups (``OTHER_GROUP``: reviewed images) a fixed share of all draws first, split
    evenly between the classes present in the group and then over their images.

    Without this, the 2,000 face-swap frames would outweigh the 151 cat photos 13 to 1 and the model would learn
    mostly what separates face swaps; fully equal shares would repeat the smallest sets until memorised; and 200
    reviewed images among 5,000 base images would barely move a retrained model."""
    datasets = [dataset_of(path) for path, _ in items]
    fixed = {name: share for name, share in (shares or {}).items() if name in datasets and share > 0}
    probabilities = np.zeros(len(items), dtype=np.float64)
    for name, share in fixed.items():
        # Within a group each class present gets half its share: 170 reviewed reals and 30 reviewed fakes must not
        # turn the group's draws into a lesson that reviewed images are real.
        labels = {label for (_, label), dataset in zip(items, datasets, strict=True) if dataset == name}
        for label in labels:
            members = [i for i, ((_, item_label), dataset) in enumerate(zip(items, datasets, strict=True))
                       if dataset == name and item_label == label]
            probabilities[members] = share / len(labels) / len(members)
    rest = [i for i, dataset in enumerate(datasets) if dataset not in fixed]
    if rest:
        remaining = max(0.0, 1.0 - sum(fixed.values()))
        probabilities[rest] = remaining * _balanced([items[i] for i in rest], [datasets[i] for i in rest], temper)
    return probabilities / probabilities.sum()


def _balanced(items: Sequence[Item], datasets: Sequence[str], temper: float) -> np.ndarray:
    """Half the draws per class (all of them when one class is missing), tempered by dataset size within it."""
    groups = [(dataset, label) for dataset, (_, label) in zip(datasets, items, strict=True)]
    sizes: dict[tuple[str, int], int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    classes = {label for _, label in groups}
    probabilities = np.zeros(len(items), dtype=np.float64)
    for label in classes:
        weights = {group: size**temper for group, size in sizes.items() if group[1] == label}
        total = sum(weights.values())
        for index, group in enumerate(groups):
            if group in weights:
                probabilities[index] = weights[group] / total / sizes[group] / len(classes)
    return probabilities


def group_weights(items: Sequence[Item], temper: float = 0.5) -> np.ndarray:
    """Per-item weights that give each dataset a say proportional to its size raised to ``temper``: the weights a
    pooled statistic over several collections (the flag bound over validation reals) uses, so a small collection
    of reviewed images counts, without one of 12 images counting as much as one of 200."""
    datasets = [dataset_of(path) for path, _ in items]
    sizes = {name: datasets.count(name) for name in set(datasets)}
    return np.asarray([sizes[name] ** (temper - 1) for name in datasets], dtype=np.float64)


def describe(items: Sequence[Item]) -> dict[str, int]:
    """Counts per class, for metadata and logs."""
    return {name: sum(1 for _, label in items if label == value) for name, value in CLASSES.items()}
