"""Train a detector: ``train(TrainConfig(data_dirs, arch=..., epochs=..., out=...)) -> Path`` writes the
``.keras`` file, its metadata JSON and a curves PNG side by side.

Hooks for the retraining worker (fields of :class:`TrainConfig`): ``items=`` (explicit ``(path, label)`` training
items beside or instead of dataset folders), ``init_from=`` (fine-tune an existing model file), ``on_epoch(epoch, metrics)`` and
``should_stop()`` (checked after every batch; a cancelled run raises :class:`TrainingCancelled`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.model_metadata import file_sha256, metadata_path, read_metadata
from models.architectures import ArchSpec, get_arch
from models.augment import AugmentRecipe, augment_crop
from models.data import Item, LoadedImages, describe, group_weights, list_many, load_items, sampling_probabilities
from models.export import export_model
from models.metrics import compute_metrics, flag_bound, operating_point
from models.preprocessing import input_size, prepare
from models.serving import Detector, calibrate

log = logging.getLogger(__name__)

# The most validation reals a model may flag (fake or uncertain): below the 5% the tool promises, for margin.
MAX_FLAGGED = 0.04
# Where the flag bound may sit at most, so the policy's "real below min(t - b, 0.5)" can honour it.
FLAG_BOUND_CEILING = 0.45
EpochHook = Callable[[int, dict[str, float]], None]


class TrainingCancelled(RuntimeError):
    """``should_stop()`` returned True; nothing was written."""


# A fine-tune starts at a third of the architecture's learning rate: Adam's first steps move every weight by about
# the rate, and at the full rate a short retrain on a few hundred reviews overwrites what the base model knew
# instead of adjusting it.
FINE_TUNE_RATE = 0.3
# The share of explicit items (reviewed images) held out for validation and calibration.
ITEMS_HELD_OUT = 0.15


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; ``train(config)`` runs it.

    ``data_dirs``: dataset folders whose train splits are trained on and whose valid splits select and calibrate.
    ``items``: explicit ``(path, label)`` training items beside or instead of them; ``valid_items``: explicit
    validation items instead of the data dirs' valid splits.
    ``init_from``: fine-tune this model file; ``on_epoch(epoch, metrics)`` and ``should_stop()`` are the
    retraining worker's hooks (``should_stop`` is checked after every batch).
    ``crop_span``: overrides the architecture's crop span (where training windows and serving crops are
    centred; 1.0 is the whole image), and is written to the model's preprocessing.
    ``steps_per_epoch``: batches per epoch (default: ``crops_per_image`` crops of every image).
    ``temper``: balance the draws across datasets and classes (see ``models.data.sampling_probabilities``);
    ``None`` draws every image equally often, as the seed does. ``shares``: fixed shares of the draws for named
    groups (``{"other": 0.4}`` gives reviewed images 40%).
    ``recipe``: the augmentation recipe (default: ``AugmentRecipe()``).
    ``time_budget_s``: stop after this many seconds of training (the best epoch so far is kept).
    ``image_cache``: decoded images by path, shared between runs (see ``models.data.load_items``).
    ``max_flagged``: the most validation reals the chosen threshold and band may flag."""

    # Sequences and str paths are accepted and normalised to tuples of Paths in __post_init__.
    data_dirs: Sequence[str | Path] = ()
    arch: str = "default"
    epochs: int | None = None
    out: str | Path = Path("var/models/model.keras")
    items: Sequence[Item] = ()
    valid_items: Sequence[Item] | None = None
    init_from: str | Path | None = None
    on_epoch: EpochHook | None = None
    should_stop: Callable[[], bool] | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    crops_per_image: int = 1
    crop_span: float | None = None
    steps_per_epoch: int | None = None
    temper: float | None = 0.5
    shares: dict[str, float] | None = None
    recipe: AugmentRecipe | None = None
    time_budget_s: float | None = None
    image_cache: dict[Path, Any] | None = field(default=None, compare=False, repr=False)
    patience: int = 8
    seed: int = 1337
    max_flagged: float = MAX_FLAGGED
    name: str | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        # Normalise what callers naturally pass (lists, strings) so the frozen config holds one shape.
        object.__setattr__(self, "data_dirs", tuple(Path(d) for d in self.data_dirs))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "items", tuple((Path(p), int(y)) for p, y in self.items))
        if self.valid_items is not None:
            object.__setattr__(self, "valid_items", tuple((Path(p), int(y)) for p, y in self.valid_items))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        get_arch(self.arch)  # raises on an unknown architecture before any data is read
        for label, value in (("epochs", self.epochs), ("batch_size", self.batch_size),
                             ("steps_per_epoch", self.steps_per_epoch)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be at least 1, not {value}")
        if self.crops_per_image < 1 or self.patience < 1:
            raise ValueError("crops_per_image and patience must be at least 1")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate}")
        if self.crop_span is not None and not 0 < self.crop_span <= 1:
            raise ValueError(f"crop_span must be in (0, 1], not {self.crop_span}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, not {self.time_budget_s}")
        if not 0 < self.max_flagged < 1:
            raise ValueError(f"max_flagged must be in (0, 1), not {self.max_flagged}")


def train(config: TrainConfig) -> Path:
    """Train ``config.arch`` on the train splits of ``config.data_dirs`` plus ``config.items``; select on their
    valid splits (or a held-out 15% of the training items when there are none); calibrate, choose the threshold
    and write the model, metadata and curves. Returns the ``.keras`` path."""
    import keras

    c = config
    started = time.monotonic()
    spec = get_arch(c.arch)
    if c.init_from is not None and c.crop_span is None and metadata_path(c.init_from).exists():
        # A fine-tuned model sees what its base saw (the base's crops, not today's defaults) unless told a span.
        spec = replace(spec, preprocessing=read_metadata(c.init_from)["preprocessing"])
    if c.crop_span is not None and spec.preprocessing["kind"] == "crops":
        spec = replace(spec, preprocessing={**spec.preprocessing, "span": c.crop_span})
    keras.utils.set_random_seed(c.seed)
    out = Path(c.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    recipe = c.recipe or AugmentRecipe()
    train_items, val_items = _split_items(c.data_dirs, c.items, c.seed, c.valid_items)
    train_set, val_set = load_items(train_items, cache=c.image_cache), load_items(val_items, cache=c.image_cache)
    log.info("training on %s, validating on %s", describe(train_items), describe(val_items))
    if not train_set.images or not val_set.images:
        raise ValueError("no decodable training or validation images")

    model = _build_or_load(spec, c.init_from)
    batch = c.batch_size or spec.batch_size
    n_epochs = c.epochs or spec.epochs
    steps = c.steps_per_epoch or max(1, (len(train_set.images) * c.crops_per_image) // batch)
    default_rate = spec.learning_rate * (FINE_TUNE_RATE if c.init_from is not None else 1.0)
    _compile(model, spec, c.learning_rate or default_rate, steps * n_epochs)
    probabilities = (sampling_probabilities(loaded_items(train_items, train_set), c.temper, c.shares)
                     if c.temper is not None else None)
    train_ds = _train_dataset(train_set, spec, batch, steps, c.seed, probabilities, recipe)
    val_ds = _val_dataset(val_set, spec, batch)

    checkpoint = out.with_name(out.stem + ".checkpoint.keras")
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=n_epochs,
        verbose=c.verbose,
        shuffle=False,  # the datasets shuffle themselves
        callbacks=_callbacks(checkpoint, _monitor(spec), c.patience, c.on_epoch, c.should_stop, c.time_budget_s),
    )
    if c.should_stop is not None and c.should_stop():
        checkpoint.unlink(missing_ok=True)
        raise TrainingCancelled("training was cancelled")
    save_for_serving(model, out)
    checkpoint.unlink(missing_ok=True)

    metadata = _metadata(spec, out, c.name, c.data_dirs, train_items, val_items, history.history, c.seed, n_epochs,
                         c.crops_per_image)
    metadata["training"].update({"steps_per_epoch": steps, "batch_size": batch, "train_crop": spec.train_crop,
                                 "temper": c.temper, "shares": c.shares,
                                 "recipe": recipe.to_dict(), "time_budget_s": c.time_budget_s})
    metadata.update(_calibrate(model, metadata, val_set, group_weights(loaded_items(val_items, val_set)),
                               c.max_flagged))
    metadata["train_seconds"] = round(time.monotonic() - started, 1)
    metadata_path(out).write_text(json.dumps(metadata, indent=2) + "\n")
    export_model(out, model=model)  # the file the workers serve, listed with its SHA-256 in the metadata
    plot_curves(history.history, out.with_name(out.stem + "-curves.png"), metadata["name"])
    log.info("wrote %s (%s) in %.0f s", out, metadata["name"], metadata["train_seconds"])
    return out


def loaded_items(items: Sequence[Item], loaded: LoadedImages) -> list[Item]:
    """The items that decoded, in ``loaded``'s order (corrupt files were skipped)."""
    skipped = {path for path, _ in loaded.skipped}
    return [item for item in items if item[0] not in skipped]


def _split_items(
    data_dirs: Sequence[str | Path], items: Sequence[Item], seed: int, valid_items: Sequence[Item] | None = None
) -> tuple[list[Item], list[Item]]:
    explicit = [(Path(p), int(y)) for p, y in items]
    if valid_items is not None:
        return list_many(data_dirs, "train") + explicit, [(Path(p), int(y)) for p, y in valid_items]
    # Explicit items (reviewed images) keep 15% for validation even when the data dirs have their own: the
    # threshold is then chosen with the reviewed reals among the validation reals, so a retrain on a new
    # collection's reviews is calibrated on that collection too, not only on the base datasets.
    held_out, explicit_train = _hold_out(explicit, ITEMS_HELD_OUT, seed)
    return list_many(data_dirs, "train") + explicit_train, list_many(data_dirs, "valid") + held_out


def _hold_out(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """``fraction`` of the items (at least one when there are two or more), drawn with ``seed``, and the rest."""
    if len(items) < 2:
        return [], items
    order = np.random.default_rng(seed).permutation(len(items))
    cut = max(1, int(len(items) * fraction))
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


def _build_or_load(spec: ArchSpec, init_from: str | Path | None) -> Any:
    import keras

    if init_from is None:
        return spec.build(input_size(spec.preprocessing))
    model = keras.saving.load_model(Path(init_from), compile=False)
    if model.name != spec.name:
        raise ValueError(f"{init_from} is a {model.name!r} model, not {spec.name!r}")
    return model


def _compile(model: Any, spec: ArchSpec, learning_rate: float, total_steps: int) -> None:
    import keras

    if spec.output == "softmax2":
        # The seed, as described: Adam, sparse categorical cross-entropy.
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps), alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"), keras.metrics.AUC(from_logits=True, name="auc")],
    )


def _train_dataset(
    loaded: LoadedImages,
    spec: ArchSpec,
    batch: int,
    steps: int,
    seed: int,
    probabilities: np.ndarray | None,
    recipe: AugmentRecipe,
) -> Any:
    """``steps`` batches per epoch of augmented crops, drawn with ``probabilities`` (uniformly when None); a
    real crop becomes a synthetic fake with the recipe's ``synthetic_fake_p``."""
    import tensorflow as tf

    size = spec.train_crop or input_size(spec.preprocessing)
    span = float(spec.preprocessing.get("span", 1.0))
    labels = np.asarray(loaded.labels, dtype=np.float32)
    if not spec.augment:
        dataset = tf.data.Dataset.from_tensor_slices(_serving_rows(loaded, spec))
        return dataset.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True).batch(batch).prefetch(2)

    epoch_counter = iter(range(1_000_000))
    draws = steps * batch

    def crops() -> Iterator[tuple[np.ndarray, np.float32]]:
        rng = np.random.default_rng([seed, next(epoch_counter)])
        if probabilities is None:
            order = rng.permutation(np.resize(np.arange(len(labels)), draws))
        else:
            order = rng.choice(len(labels), size=draws, p=probabilities)
        for index in order:
            synthetic = labels[index] == 0 and rng.random() < recipe.synthetic_fake_p
            crop = augment_crop(loaded.images[index], size, rng, span, recipe, synthetic=synthetic)
            yield crop, np.float32(1.0 if synthetic else labels[index])

    signature = (tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((), tf.float32))
    dataset = tf.data.Dataset.from_generator(crops, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(draws))
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)


def _val_dataset(loaded: LoadedImages, spec: ArchSpec, batch: int) -> Any:
    import tensorflow as tf

    # The serving crops, so validation loss is measured on exactly what the model will see.
    return tf.data.Dataset.from_tensor_slices(_serving_rows(loaded, spec)).batch(batch).cache().prefetch(2)


def _serving_rows(loaded: LoadedImages, spec: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs serving would build for these images, each with its image's label in the loss's dtype."""
    rows, counts = prepare(loaded.images, spec.preprocessing)
    labels = np.repeat(np.asarray(loaded.labels), counts)
    return rows, labels.astype(np.int32 if spec.output == "softmax2" else np.float32)


def _monitor(spec: ArchSpec) -> str:
    # Crop-level validation loss is noisy early on; ranking (AUC) is what threshold and calibration build on.
    return "val_auc" if spec.output == "logit" else "val_loss"


def _callbacks(
    checkpoint: Path,
    monitor: str,
    patience: int,
    on_epoch: EpochHook | None,
    should_stop: Callable[[], bool] | None,
    time_budget_s: float | None = None,
) -> list[Any]:
    import keras

    started = time.monotonic()

    class Hooks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if should_stop is not None and should_stop():
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            # The budget ends training between epochs (so every epoch run is validated and can be the one kept),
            # before the epoch that would overrun it.
            elapsed = time.monotonic() - started
            if time_budget_s and elapsed * (epoch + 2) / (epoch + 1) > time_budget_s:
                self.model.stop_training = True
            if on_epoch is not None:
                on_epoch(epoch + 1, {key: float(value) for key, value in (logs or {}).items()})

    return [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="auto", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor=monitor, mode="auto", save_best_only=True),
        Hooks(),
    ]


def _calibrate(
    model: Any, metadata: dict[str, Any], val_set: LoadedImages, weights: np.ndarray, max_flagged: float
) -> dict[str, Any]:
    """Platt scaling of pooled logits, then the threshold and band, all on validation images; ``weights`` give
    each collection's reals their say in the flag bound (``models.data.group_weights``).

    The flag bound (``t - b``) must stay at or below 0.5 for the policy to honour it; when validation reals score
    so high that it would not, the Platt intercept is shifted (a lower prior on "fake": in the wild most images
    are genuine) until it does, and the shift is recorded in the calibration."""
    from sklearn.linear_model import LogisticRegression

    detector = Detector.from_keras(model, {**metadata, "threshold": 0.5, "band": 0.0})
    logits = detector.raw_logits(val_set.images)
    labels = np.asarray(val_set.labels)
    calibration: dict[str, Any] = {"method": "identity", "a": 1.0, "b": 0.0}
    if len(set(labels.tolist())) == 2:
        fit = LogisticRegression(C=1e4, class_weight="balanced").fit(logits.reshape(-1, 1), labels)
        calibration = {"method": "platt", "a": float(fit.coef_[0, 0]), "b": float(fit.intercept_[0])}
    scores = calibrate(logits, calibration)
    reals = labels == 0
    bound = flag_bound(scores[reals], max_flagged, weights[reals])
    if bound > FLAG_BOUND_CEILING:
        shift = float(np.log(bound / (1 - bound)) - np.log(FLAG_BOUND_CEILING / (1 - FLAG_BOUND_CEILING)))
        calibration = {**calibration, "b": calibration["b"] - shift, "prior_shift": shift}
        scores = calibrate(logits, calibration)
    threshold, band = operating_point(scores[reals], max_flagged, weights=weights[reals])
    return {
        "calibration": calibration,
        "threshold": threshold,
        "band": band,
        "metrics": {"valid": compute_metrics(scores, labels, threshold)},
    }


def _metadata(
    spec: ArchSpec,
    out: Path,
    name: str | None,
    data_dirs: Sequence[str | Path],
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    history: dict[str, list[float]],
    seed: int,
    epochs: int,
    crops_per_image: int,
) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    created = datetime.now(UTC)
    digest = file_sha256(out)
    return {
        "name": name or f"{spec.name}-{created:%Y%m%d-%H%M%S}-{digest[:8]}",
        "architecture": spec.name,
        "description": spec.description,
        "input_size": input_size(spec.preprocessing),
        "preprocessing": spec.preprocessing,
        "output": spec.output,
        "training_data": {
            "datasets": [str(Path(d)) for d in data_dirs],
            "train": describe(train_items),
            "valid": describe(val_items),
        },
        "training": {"epochs_requested": epochs, "epochs_run": len(history.get("loss", [])), "seed": seed,
                     "augment": spec.augment, "crops_per_image": crops_per_image},
        "history": {key: [round(float(v), 5) for v in values] for key, values in history.items()},
        "sha256": digest,
        "size_bytes": out.stat().st_size,
        "created_at": created.isoformat(timespec="seconds"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }


def save_for_serving(model: Any, out: Path) -> None:
    """Save the weights and graph without optimizer state (a third of the file; fine-tuning starts afresh)."""
    import keras

    bare = keras.models.clone_model(model)
    bare.set_weights(model.get_weights())
    bare.save(out)


def plot_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, training and validation, as the seed plotted them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "valid")):
            values = history.get(prefix + metric, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
