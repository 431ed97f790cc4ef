"""The aligned-pairs recipe: train a detector on genuine photos and their reconstructions by a generator's
decoder (``models.pairs``) beside the shared sets' labelled images.

Each step draws ``pair_share`` of the batch as aligned pairs and the rest as labelled images (balanced across
datasets and classes). Both members of a pair go through the *same* augmentation (one random generator seeded
alike: same window, resize, colour, blur, JPEG quality and flip), so only the decoder's trace separates them. The
loss is a pairwise ranking term on the pairs, ``softplus(s_real - s_fake)`` (the shared content cancels; plain
cross-entropy did not learn pairs at all in the trial the issue reports), plus binary cross-entropy on every crop.
Selection, calibration and the operating point are the standard ones (``models.train``), on the fold's
validation images.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.model_metadata import metadata_path
from models.architectures import get_arch
from models.augment import AugmentRecipe, augment_crop
from models.data import Item, describe, group_weights, load_items, sampling_probabilities

log = logging.getLogger(__name__)

# Gentle for pairs: random resizing wipes most of a latent decoder's periodic mark (periods 4 and 8), and blur
# would hide it; both classes still see JPEG, colour and tone changes.
PAIR_RECIPE = AugmentRecipe(downscale_p=0.1, downscale_range=(0.75, 1.0), blur_p=0.05, sharpen_p=0.05,
                            noise_p=0.05, jpeg_p=0.5, jpeg_quality=(70, 98), jpeg_low_p=0.0)


@dataclass(frozen=True)
class PairwiseConfig:
    """One pairwise training run. ``pairs``: (dataset, real path, fake path) of aligned pairs; ``items`` and
    ``valid_items``: labelled training and validation images; ``ranking_weight``: the ranking term's weight
    beside cross-entropy; ``time_budget_s``: training stops there (the best validation AUC so far is kept)."""

    arch: str = "default"
    pairs: Sequence[tuple[str, Path, Path]] = ()
    items: Sequence[Item] = ()
    valid_items: Sequence[Item] = ()
    out: Path = Path("var/models/pairwise.keras")
    steps: int = 600
    eval_every: int = 100
    batch_size: int = 32
    pair_share: float = 0.5
    learning_rate: float | None = None
    ranking_weight: float = 1.0
    time_budget_s: float | None = None
    seed: int = 1337
    max_flagged: float = 0.04
    selection_sample: int = 300
    recipe: AugmentRecipe = PAIR_RECIPE  # for both members of a pair and for the labelled images
    image_cache: dict[Path, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        get_arch(self.arch)
        if not self.pairs and not self.items:
            raise ValueError("nothing to train on: give pairs or items")
        if not 0 <= self.pair_share <= 1 or self.steps < 1 or self.batch_size < 4:
            raise ValueError("pair_share must be in [0, 1], steps >= 1 and batch_size >= 4")


def pair_crops(real: Image.Image, fake: Image.Image, crop: int, rng: np.random.Generator,
               recipe: AugmentRecipe = PAIR_RECIPE) -> tuple[np.ndarray, np.ndarray]:
    """One crop of each member through the same augmentation draws."""
    seed = int(rng.integers(2**31))
    return (augment_crop(real, crop, np.random.default_rng(seed), recipe=recipe),
            augment_crop(fake, crop, np.random.default_rng(seed), recipe=recipe))


MIN_SELECTION_PAIRS = 16


def split_selection_pairs(pairs: Sequence[tuple[Image.Image, Image.Image]], seed: int, share: float = 0.1
                          ) -> tuple[list[tuple[Image.Image, Image.Image]], list[tuple[Image.Image, Image.Image]]]:
    """(pairs to train on, pairs held out for selection): ``share`` of them, at least ``MIN_SELECTION_PAIRS``, drawn
    with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    count = max(MIN_SELECTION_PAIRS, int(round(share * len(pairs))))
    held = set(order[:count].tolist())
    return ([pair for i, pair in enumerate(pairs) if i not in held], [pair for i, pair in enumerate(pairs) if i in held])


def _load_pairs(pairs: Sequence[tuple[str, Path, Path]]) -> list[tuple[Image.Image, Image.Image]]:
    loaded = []
    for _, real, fake in pairs:
        with Image.open(real) as a, Image.open(fake) as b:
            loaded.append((a.convert("RGB"), b.convert("RGB")))
    return loaded


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else 0.5


def train_pairwise(config: PairwiseConfig) -> Path:
    """Train, select on validation AUC, calibrate and write the model with its metadata; returns the path."""
    import keras
    import tensorflow as tf

    from models.serving import Detector
    from models.train import _calibrate, _metadata, loaded_items, save_for_serving

    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    spec = get_arch(config.arch)
    crop = int(spec.preprocessing["crop_size"])
    pairs = _load_pairs(config.pairs)
    train_set = load_items(list(config.items), cache=config.image_cache)
    val_set = load_items(list(config.valid_items), cache=config.image_cache)
    if train_set.images or len(pairs) < 2 * MIN_SELECTION_PAIRS:
        # Selection scores a fixed sample of the validation images (every crop of 1,000 images per check would eat
        # a short budget); calibration and the operating point use all of them.
        sample = np.random.default_rng(config.seed).permutation(len(val_set.images))[:config.selection_sample]
        sample_images = [val_set.images[i] for i in sample]
        sample_labels = np.asarray([val_set.labels[i] for i in sample])
        selection = f"{len(sample_images)} validation images"
    else:
        # Pairs alone: the labelled validation sets separate their classes mostly by collection, which a model of
        # generator traces does not learn (AUC 0.46-0.54 there at every step), so selecting on them is close to
        # picking a checkpoint at random. Held-out pairs, both members scored as single images, measure what the
        # run learns; they are left out of training.
        pairs, held = split_selection_pairs(pairs, config.seed)
        sample_images = [image for pair in held for image in pair]
        sample_labels = np.asarray([0, 1] * len(held))
        selection = f"{len(held)} held-out pairs"
    probabilities = (sampling_probabilities(loaded_items(list(config.items), train_set), 0.5, None)
                     if train_set.images else None)
    model = spec.build(crop)
    optimizer = keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(
        config.learning_rate or spec.learning_rate, config.steps, alpha=0.05), weight_decay=1e-4)
    n_pairs = int(round(config.batch_size * config.pair_share / 2)) if pairs else 0
    n_single = config.batch_size - 2 * n_pairs if train_set.images else 0

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = tf.squeeze(model(x, training=True), -1)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            # Rows [0, n) are reals and [n, 2n) their reconstructions, in the same order.
            ranking = tf.reduce_mean(tf.nn.softplus(logits[:n] - logits[n:2 * n])) if n_pairs else 0.0
            total = loss + config.ranking_weight * ranking
        optimizer.apply_gradients(zip(tape.gradient(total, model.trainable_variables), model.trainable_variables,
                                      strict=True))
        return total

    rng = np.random.default_rng(config.seed)
    # The budget counts training only: decoding thousands of images on a loaded machine is not the recipe's cost.
    training_started = time.monotonic()
    detector_meta = {"name": "selection", "threshold": 0.5, "band": 0.0, "preprocessing": spec.preprocessing,
                     "output": "logit"}
    history: dict[str, list[float]] = {"loss": [], "val_auc": []}
    best_auc, best_weights = -1.0, model.get_weights()
    losses: list[float] = []
    for index in range(1, config.steps + 1):
        rows, labels = [], []
        if n_pairs:
            chosen = rng.integers(len(pairs), size=n_pairs)
            made = [pair_crops(pairs[i][0], pairs[i][1], crop, rng, config.recipe) for i in chosen]
            rows += [r for r, _ in made] + [f for _, f in made]
            labels += [0.0] * n_pairs + [1.0] * n_pairs
        if n_single:
            for i in rng.choice(len(train_set.images), size=n_single, p=probabilities):
                rows.append(augment_crop(train_set.images[i], crop, rng, recipe=config.recipe))
                labels.append(float(train_set.labels[i]))
        losses.append(float(step(tf.constant(np.stack(rows), tf.float32), tf.constant(labels, tf.float32),
                                 tf.constant(n_pairs))))
        out_of_time = (config.time_budget_s is not None
                       and time.monotonic() - training_started > config.time_budget_s)
        if index % config.eval_every == 0 or index == config.steps or out_of_time:
            auc = _auc(np.asarray(Detector.from_keras(model, detector_meta).raw_logits(sample_images)),
                       sample_labels) if sample_images else 0.5
            history["loss"].append(float(np.mean(losses)))
            history["val_auc"].append(auc)
            losses = []
            log.info("step %d: loss %.4f, validation AUC %.4f", index, history["loss"][-1], auc)
            if auc > best_auc:
                best_auc, best_weights = auc, model.get_weights()
        if out_of_time:
            break
    model.set_weights(best_weights)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_for_serving(model, out)
    metadata = _metadata(spec, out, None, [], list(config.items), list(config.valid_items), history, config.seed,
                         len(history["loss"]), 1)
    metadata["training"].update({"recipe": "pairwise", "selection": selection, "steps_run": index, "batch_size": config.batch_size,
                                 "pairs": len(pairs), "pairs_by_dataset": _count(config.pairs),
                                 "pair_share": config.pair_share, "ranking_weight": config.ranking_weight,
                                 "pair_augmentation": config.recipe.to_dict(), "time_budget_s": config.time_budget_s,
                                 "train": describe(list(config.items))})
    if val_set.images:
        metadata.update(_calibrate(model, metadata, val_set,
                                   group_weights(loaded_items(list(config.valid_items), val_set)),
                                   config.max_flagged))
    metadata["train_seconds"] = round(time.monotonic() - started, 1)
    metadata["training"]["training_seconds"] = round(time.monotonic() - training_started, 1)
    metadata_path(out).write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def _count(pairs: Sequence[tuple[str, Path, Path]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for dataset, _, _ in pairs:
        counts[dataset] = counts.get(dataset, 0) + 1
    return counts
