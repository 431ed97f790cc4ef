"""Export a ``.keras`` model to the serving runtime's format, beside it, and list the file in the model's metadata.

Training stays in Keras and the ``.keras`` file stays the model of record. Workers score with LiteRT (the TFLite
interpreter with XNNPACK, package ``ai-edge-litert``), which loads in milliseconds and never imports TensorFlow:
see docs/serving.md for the measurements that chose it. This step runs at the end of every training run and, for
the shipped default, from ``make export`` (``fakewatch export-model``); rerun it after replacing a model.

The export is checked before it is recorded: the same random crops through Keras and through the runtime must give
logits within ``PARITY_TOLERANCE``, and the largest difference is written to the metadata.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.model_metadata import describe_file, metadata_path, read_metadata
from models.preprocessing import input_size

log = logging.getLogger("fakewatch.models")

RUNTIME_FORMAT = "litert"
RUNTIME_SUFFIX = ".tflite"
# float32 is the default: the shipped calibration was fitted on float32 logits. int8 (dynamic range) measured 1.5-2x
# faster within 0.002 test AUC; float16 no faster (docs/serving.md).
QUANTIZATIONS = ("float32", "float16", "int8")
# Largest |logit| difference accepted between Keras and the exported file on the same crops (float32 export).
PARITY_TOLERANCE = 1e-3
PARITY_ROWS = 16


def runtime_path(model_path: str | Path) -> Path:
    """Where the exported file of a ``.keras`` model goes: beside it, same stem."""
    return Path(model_path).with_suffix(RUNTIME_SUFFIX)


def _converter_options(quantization: str) -> dict[str, Any]:
    import tensorflow as tf

    if quantization == "float32":
        return {}
    if quantization == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
    if quantization == "int8":  # dynamic range: int8 weights, float activations, no calibration data needed
        return {"optimizations": [tf.lite.Optimize.DEFAULT]}
    raise ValueError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")


def convert(model: Any, out: Path, quantization: str = "float32") -> Path:
    """Write ``model`` as a LiteRT flatbuffer at ``out``."""
    options = _converter_options(quantization)
    # Keras' exporter traces through a SavedModel; it writes only the file asked for.
    model.export(str(out), format="litert", verbose=False, **options)
    return out


def parity(model: Any, exported: Path, size: int, rows: int = PARITY_ROWS, seed: int = 0) -> float:
    """Largest absolute difference between Keras' and the runtime's outputs on the same random crops."""
    from models.runtime import LiteRTModel

    crops = np.random.default_rng(seed).integers(0, 256, (rows, size, size, 3)).astype(np.float32)
    keras_out = np.asarray(model(crops, training=False), dtype=np.float64)
    runtime_out = LiteRTModel(exported.read_bytes(), threads=1).predict(crops).astype(np.float64)
    return float(np.max(np.abs(keras_out.reshape(len(crops), -1) - runtime_out.reshape(len(crops), -1))))


def export_model(model_path: str | Path, quantization: str = "float32", model: Any = None,
                 out: str | Path | None = None) -> Path:
    """Export the model at ``model_path`` (or the already loaded ``model``) and record the exported file in its
    metadata (``files`` with SHA-256s, ``runtime``). Returns the exported file's path. Refuses an export whose
    outputs drift from Keras' by more than ``PARITY_TOLERANCE`` (float32) or 0.05 (quantized)."""
    import keras

    model_path = Path(model_path)
    metadata = read_metadata(model_path)
    if model is None:
        model = keras.saving.load_model(model_path, compile=False)
    target = Path(out) if out is not None else runtime_path(model_path)
    with tempfile.TemporaryDirectory() as scratch:
        staged = convert(model, Path(scratch) / target.name, quantization)
        difference = parity(model, staged, input_size(metadata["preprocessing"]))
        tolerance = PARITY_TOLERANCE if quantization == "float32" else 0.05
        if difference > tolerance:
            raise ValueError(f"the exported model's outputs differ from Keras' by {difference:.2e} (> {tolerance}): "
                             "not recorded")
        staged.replace(target)
    record_export(model_path, target, quantization, difference)
    log.info("exported %s to %s (%s, largest logit difference %.2e)", model_path.name, target.name, quantization,
             difference)
    return target


def record_export(model_path: Path, exported: Path, quantization: str, difference: float) -> dict[str, Any]:
    """Write the version's file list (``.keras`` and exported file, with SHA-256s) and runtime into its metadata."""
    import tensorflow as tf

    metadata = read_metadata(model_path)
    keras_entry = describe_file(model_path, "keras")
    if metadata.get("sha256") and metadata["sha256"] != keras_entry.sha256:
        raise ValueError(f"{model_path} does not match the SHA-256 in its metadata; not exporting it")
    metadata["files"] = [keras_entry.to_dict(), describe_file(exported, RUNTIME_FORMAT).to_dict()]
    metadata["runtime"] = {"format": RUNTIME_FORMAT, "quantization": quantization,
                           "parity_max_abs_diff": difference, "exported_with": f"tensorflow {tf.__version__}"}
    metadata_path(model_path).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata
