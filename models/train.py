"""Train a detector: ``train(data_dirs, arch=..., epochs=..., out=...) -> Path`` writes the ``.keras`` file, its
metadata JSON and a curves PNG side by side.

Hooks for the retraining worker: ``items=`` (explicit ``(path, label)`` training items beside or instead of
dataset folders), ``init_from=`` (fine-tune an existing model file), ``on_epoch(epoch, metrics)`` and
``should_stop()`` (checked after every batch; a cancelled run raises :class:`TrainingCancelled`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.model_metadata import file_sha256, metadata_path
from models.architectures import ArchSpec, get_arch
from models.augment import augment_crop
from models.data import Item, LoadedImages, describe, list_many, load_items
from models.metrics import choose_threshold, compute_metrics
from models.preprocessing import input_size, prepare
from models.serving import Detector, calibrate

log = logging.getLogger(__name__)

DEFAULT_BAND = 0.1
EpochHook = Callable[[int, dict[str, float]], None]


class TrainingCancelled(RuntimeError):
    """``should_stop()`` returned True; nothing was written."""


def train(
    data_dirs: Sequence[str | Path] = (),
    arch: str = "default",
    epochs: int | None = None,
    out: str | Path = "var/models/model.keras",
    *,
    items: Sequence[Item] = (),
    init_from: str | Path | None = None,
    on_epoch: EpochHook | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    crops_per_image: int = 1,
    crop_span: float | None = None,
    patience: int = 8,
    seed: int = 1337,
    max_fpr: float = 0.05,
    band: float = DEFAULT_BAND,
    name: str | None = None,
    verbose: int = 1,
) -> Path:
    """Train ``arch`` on the train splits of ``data_dirs`` plus ``items``; select on their valid splits (or a
    held-out 15% of the training items when there are none); calibrate, choose the
    threshold and write the model, metadata and curves. Returns the ``.keras`` path.

    ``crop_span``: overrides the architecture's crop span (where training windows and serving crops are
    centred; 1.0 is the whole image), and is written to the model's preprocessing."""
    import keras

    started = time.monotonic()
    spec = get_arch(arch)
    if crop_span is not None and spec.preprocessing["kind"] == "crops":
        spec = replace(spec, preprocessing={**spec.preprocessing, "span": crop_span})
    keras.utils.set_random_seed(seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    train_items, val_items = _split_items(data_dirs, items, seed)
    train_set, val_set = load_items(train_items), load_items(val_items)
    log.info("training on %s, validating on %s", describe(train_items), describe(val_items))
    if not train_set.images or not val_set.images:
        raise ValueError("no decodable training or validation images")

    model = _build_or_load(spec, init_from)
    batch = batch_size or spec.batch_size
    n_epochs = epochs or spec.epochs
    steps = max(1, (len(train_set.images) * crops_per_image) // batch)
    _compile(model, spec, learning_rate or spec.learning_rate, steps * n_epochs)
    train_ds = _train_dataset(train_set, spec, batch, crops_per_image, seed)
    val_ds = _val_dataset(val_set, spec, batch)

    checkpoint = out.with_name(out.stem + ".checkpoint.keras")
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=n_epochs,
        verbose=verbose,
        shuffle=False,  # the datasets shuffle themselves
        callbacks=_callbacks(checkpoint, _monitor(spec), patience, on_epoch, should_stop),
    )
    if should_stop is not None and should_stop():
        checkpoint.unlink(missing_ok=True)
        raise TrainingCancelled("training was cancelled")
    save_for_serving(model, out)
    checkpoint.unlink(missing_ok=True)

    metadata = _metadata(spec, out, name, data_dirs, train_items, val_items, history.history, seed, n_epochs,
                         crops_per_image)
    metadata.update(_calibrate(model, metadata, val_set, max_fpr, band))
    metadata["train_seconds"] = round(time.monotonic() - started, 1)
    metadata_path(out).write_text(json.dumps(metadata, indent=2) + "\n")
    plot_curves(history.history, out.with_name(out.stem + "-curves.png"), metadata["name"])
    log.info("wrote %s (%s) in %.0f s", out, metadata["name"], metadata["train_seconds"])
    return out


def _split_items(
    data_dirs: Sequence[str | Path], items: Sequence[Item], seed: int
) -> tuple[list[Item], list[Item]]:
    train_items = list_many(data_dirs, "train") + [(Path(p), int(y)) for p, y in items]
    val_items = list_many(data_dirs, "valid")
    if not val_items:
        # Explicit item lists (retraining from reviews) may come without a validation set: hold out 15%.
        order = np.random.default_rng(seed).permutation(len(train_items))
        cut = max(1, len(train_items) * 15 // 100)
        val_items = [train_items[i] for i in order[:cut]]
        train_items = [train_items[i] for i in order[cut:]]
    return train_items, val_items


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


def _train_dataset(loaded: LoadedImages, spec: ArchSpec, batch: int, crops_per_image: int, seed: int) -> Any:
    import tensorflow as tf

    size = input_size(spec.preprocessing)
    span = float(spec.preprocessing.get("span", 1.0))
    labels = np.asarray(loaded.labels, dtype=np.float32)
    if not spec.augment:
        dataset = tf.data.Dataset.from_tensor_slices(_serving_rows(loaded, spec))
        return dataset.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True).batch(batch).prefetch(2)

    epoch_counter = iter(range(1_000_000))

    def crops() -> Iterator[tuple[np.ndarray, np.float32]]:
        rng = np.random.default_rng([seed, next(epoch_counter)])
        order = np.tile(np.arange(len(labels)), crops_per_image)
        for index in rng.permutation(order):
            yield augment_crop(loaded.images[index], size, rng, span), labels[index]

    signature = (tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((), tf.float32))
    dataset = tf.data.Dataset.from_generator(crops, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(labels) * crops_per_image))
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
) -> list[Any]:
    import keras

    class Hooks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if should_stop is not None and should_stop():
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if on_epoch is not None:
                on_epoch(epoch + 1, {key: float(value) for key, value in (logs or {}).items()})

    return [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="auto", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor=monitor, mode="auto", save_best_only=True),
        Hooks(),
    ]


def _calibrate(
    model: Any, metadata: dict[str, Any], val_set: LoadedImages, max_fpr: float, band: float
) -> dict[str, Any]:
    """Platt scaling of pooled logits, then the threshold and band, all on validation images."""
    from sklearn.linear_model import LogisticRegression

    detector = Detector(model, {**metadata, "threshold": 0.5, "band": band})
    logits = detector.raw_logits(val_set.images)
    labels = np.asarray(val_set.labels)
    calibration: dict[str, Any] = {"method": "identity", "a": 1.0, "b": 0.0}
    if len(set(labels.tolist())) == 2:
        fit = LogisticRegression(C=1e4).fit(logits.reshape(-1, 1), labels)
        calibration = {"method": "platt", "a": float(fit.coef_[0, 0]), "b": float(fit.intercept_[0])}
    scores = calibrate(logits, calibration)
    threshold = choose_threshold(scores, labels, max_fpr)
    return {
        "calibration": calibration,
        "threshold": threshold,
        "band": float(min(band, threshold / 2, (1 - threshold) / 2)),
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
