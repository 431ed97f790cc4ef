"""Leave-one-out generalisation: train without a dataset (or without one generator's images) and score what was
left out, none of which was trained on or used for model selection. This is the figure that predicts how the
detector does on collections and generators it has never seen; in-distribution test splits do not.

Two kinds of fold:
- a **dataset fold** leaves a whole dataset out (all splits) and scores all of it;
- a **generator fold** leaves one generator out of a dataset whose manifest names the generator of each fake
  (``diffusion_trio_vs_imagenet``), and also every other dataset with fakes by that generator (the Stable
  Diffusion fold drops the Stable Diffusion cat and class-image sets too). That dataset's *train* reals and its
  other generators' fakes are still trained on; the generator's fakes from every split are scored against the
  dataset's valid and test reals, which were not.

Everything here is plain Python over ``models.train.train`` and ``models.serving.Detector``; the benchmark
``benchmarks/generalisation.py`` runs the standard folds and prints JSON.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

from models.data import SPLITS, Item, list_items, load_items
from models.metrics import tpr_at_fpr

if TYPE_CHECKING:
    from models.train import TrainConfig

log = logging.getLogger(__name__)

GENERATOR_DATASET = "diffusion_trio_vs_imagenet"
GENERATORS = ("DALL-E 2", "Stable Diffusion", "Midjourney")
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Fold:
    """What one fold leaves out: a whole dataset, or one generator of a dataset (with ``generator``)."""

    name: str
    held_out: str
    generator: str | None = None


@dataclass
class FoldData:
    """A fold's training and validation items, the items it scores, and datasets it also dropped."""

    train: list[Item] = field(default_factory=list)
    valid: list[Item] = field(default_factory=list)
    scored: dict[str, list[Item]] = field(default_factory=dict)  # split -> left-out items
    dropped: dict[str, list[Item]] = field(default_factory=dict)  # other left-out datasets -> all their items


def standard_folds(data_root: Path) -> list[Fold]:
    """One fold per dataset present under ``data_root`` (including the one-class sets), and one per generator of
    the generator dataset when it is there."""
    folds = [Fold(name=path.name, held_out=path.name) for path in sorted(data_root.iterdir())
             if path.is_dir() and (path / "train").is_dir()]
    if (data_root / GENERATOR_DATASET / "manifest.csv").exists():
        folds += [Fold(name=f"generator: {generator}", held_out=GENERATOR_DATASET, generator=generator)
                  for generator in GENERATORS]
    return folds


def read_generators(dataset_dir: Path) -> dict[str, str]:
    """File name -> generator of each fake, from the dataset's ``manifest.csv`` (empty when there is none)."""
    manifest = dataset_dir / "manifest.csv"
    if not manifest.exists():
        return {}
    with manifest.open(newline="") as handle:
        return {row["name"]: row["gen"] for row in csv.DictReader(handle) if row.get("cls") == "fake"}


def made_by(generators: dict[str, str], generator: str) -> set[str]:
    """The file names whose generator's name starts with ``generator`` (``Stable Diffusion`` matches 1.5 and 2.1)."""
    return {name for name, gen in generators.items() if gen.lower().startswith(generator.lower())}


def fold_data(fold: Fold, data_root: Path) -> FoldData:
    """Split every dataset under ``data_root`` into what this fold trains on, validates on and scores."""
    data = FoldData()
    datasets = sorted(path for path in data_root.iterdir() if path.is_dir() and (path / "train").is_dir())
    for dataset in datasets:
        generators = read_generators(dataset)
        if fold.generator is None:
            if dataset.name == fold.held_out:
                data.scored = {split: list_items(dataset, split) for split in SPLITS}
                continue
        elif dataset.name != fold.held_out and made_by(generators, fold.generator):
            data.dropped[dataset.name] = [item for split in SPLITS for item in list_items(dataset, split)]
            continue
        elif dataset.name == fold.held_out:
            left_out = made_by(generators, fold.generator)
            for split in SPLITS:
                items = list_items(dataset, split)
                scored = [(path, label) for path, label in items
                          if (label == 1 and path.name in left_out) or (label == 0 and split != "train")]
                data.scored[split] = scored
                kept = [item for item in items if item not in scored]
                (data.train if split == "train" else data.valid if split == "valid" else []).extend(kept)
            continue
        data.train += list_items(dataset, "train")
        data.valid += list_items(dataset, "valid")
    return data


def bootstrap_interval(
    labels: np.ndarray, scores: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
    rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
) -> list[float] | None:
    """A 95% percentile interval of ``metric`` over resamples drawn within each class (so every resample has
    both classes when the data does)."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    values = []
    for _ in range(rounds):
        index = np.concatenate([rng.choice(members, size=len(members)) for members in by_class])
        values.append(metric(labels[index], scores[index]))
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def _share(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if len(mask) else None


def describe_scores(
    scores: Sequence[float], labels: Sequence[int], verdict: Callable[[float], str], rounds: int = BOOTSTRAP_ROUNDS
) -> dict[str, Any]:
    """AUC and TPR at 5% FPR with 95% bootstrap intervals when both classes are there; the share of reals
    flagged (fake or uncertain) and of fakes called fake and flagged, at the model's own threshold and band."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    verdicts = np.asarray([verdict(float(value)) for value in s])
    flagged = verdicts != "real"
    report: dict[str, Any] = {"count": {"real": int((y == 0).sum()), "fake": int((y == 1).sum())}}
    if (y == 0).any() and (y == 1).any():
        report["auc"] = round(float(roc_auc_score(y, s)), 4)
        report["auc_ci95"] = bootstrap_interval(y, s, lambda a, b: float(roc_auc_score(a, b)), rounds)
        report["tpr_at_5pct_fpr"] = round(tpr_at_fpr(s, y, 0.05), 4)
        report["tpr_at_5pct_fpr_ci95"] = bootstrap_interval(y, s, lambda a, b: tpr_at_fpr(b, a, 0.05), rounds)
    report["reals_flagged"] = _share(flagged[y == 0])
    report["fakes_called_fake"] = _share(verdicts[y == 1] == "fake")
    report["fakes_flagged"] = _share(flagged[y == 1])
    for key, values in (("reals_flagged_ci95", flagged[y == 0]), ("fakes_flagged_ci95", flagged[y == 1])):
        if len(values):
            report[key] = bootstrap_interval(np.zeros(len(values)), values.astype(float),
                                             lambda _, v: float(v.mean()), rounds)
    return report


def score_items(detector: Any, items: Sequence[Item]) -> tuple[list[float], list[int]]:
    """Scores and labels of the items that decode."""
    loaded = load_items(items)
    return detector.score(loaded.images), loaded.labels


# How a fold fine-tunes the base: the shipped recipe's last stage (crops anywhere in the image).
BASE_FINE_TUNE: dict[str, Any] = {"crop_span": 1.0}


def base_datasets(model_path: Path) -> set[str]:
    """Names of the datasets a model was trained on, from its metadata."""
    from core.model_metadata import read_metadata

    return {Path(name).name for name in read_metadata(model_path).get("training_data", {}).get("datasets", [])}


def left_out_datasets(fold: Fold, data: FoldData) -> set[str]:
    """Every dataset any of whose images this fold leaves out."""
    return {fold.held_out, *data.dropped}


def run_fold(
    fold: Fold,
    data_root: Path,
    out_dir: Path,
    config: TrainConfig,
    rounds: int = BOOTSTRAP_ROUNDS,
    base: Path | None = None,
    trainer: Callable[[FoldData, Path], Path] | None = None,
) -> dict[str, Any]:
    """Train without what ``fold`` leaves out, then score every split of it (and any dataset it also dropped).

    With ``base``, a fold whose left-out data the base model never trained on (by its metadata) fine-tunes the base
    instead of starting from scratch; other folds start from scratch. ``trainer(data, out)``: another recipe
    (the aligned-pairs one) that trains on the fold's data and returns its model path; ``config`` is then unused."""
    from core.policy import decide_verdict
    from models.serving import Detector
    from models.train import train

    data = fold_data(fold, data_root)
    init = "scratch"
    if base is not None and not left_out_datasets(fold, data) & base_datasets(base):
        # The base never saw any of what this fold leaves out, so fine-tuning it on the fold's training data is
        # the shipped recipe's last stage with the fold left out: a true leave-one-out of that recipe.
        config = replace(config, **BASE_FINE_TUNE, init_from=base)
        init = f"base {Path(base).name}"
    started = time.monotonic()
    if trainer is not None:
        init = "scratch (trainer)"
        model_path = trainer(data, out_dir / "model.keras")
    else:
        model_path = train(replace(config, items=data.train, valid_items=data.valid, out=out_dir / "model.keras",
                                   verbose=0))
    train_seconds = time.monotonic() - started
    detector = Detector.load(model_path)

    def verdict(score: float) -> str:
        return decide_verdict(score, detector.threshold, detector.band)

    all_scores: list[float] = []
    all_labels: list[int] = []
    splits: dict[str, Any] = {}
    for split, items in data.scored.items():
        scores, labels = score_items(detector, items)
        all_scores += scores
        all_labels += labels
        splits[split] = describe_scores(scores, labels, verdict, rounds)
    dropped = {}
    for name, items in data.dropped.items():
        scores, labels = score_items(detector, items)
        dropped[name] = describe_scores(scores, labels, verdict, rounds)
    meta = detector.metadata
    return {
        "fold": fold.name,
        "held_out": fold.held_out,
        "generator": fold.generator,
        "trained_on": {"train": len(data.train), "valid": len(data.valid)},
        "init": init,
        "train_seconds": round(train_seconds, 1),
        "epochs_run": meta["training"]["epochs_run"],
        "threshold": round(detector.threshold, 4),
        "band": round(detector.band, 4),
        "all_splits": describe_scores(all_scores, all_labels, verdict, rounds),
        "splits": splits,
        "also_left_out": dropped,
    }
