"""The inference runtimes a detector scores with: LiteRT for an exported model, Keras only as a fallback.

Importing this module imports neither TensorFlow nor the LiteRT interpreter; :func:`load_runtime` imports the one it
needs. A model version with an exported file (models/export.py) is scored by LiteRT with XNNPACK, in a process that
never imports TensorFlow; a version trained before exports existed falls back to Keras, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.model_metadata import ModelFile, verified_bytes

log = logging.getLogger("fakewatch.models")

# Threads per scoring process. One: a scoring worker runs one process per core (FAKEWATCH_WORKER_CONCURRENCY), and
# on this 2-core machine two single-threaded interpreters score more crops a second than one with two threads
# (docs/serving.md). On a bigger machine, raise the worker's processes first; threads help one large batch.
DEFAULT_THREADS = 1


def scoring_threads() -> int:
    """Threads each scoring interpreter uses: FAKEWATCH_SCORING_THREADS, else DEFAULT_THREADS."""
    value = os.environ.get("FAKEWATCH_SCORING_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else DEFAULT_THREADS


class Runtime(Protocol):
    """Rows of float32 crops in, the model's raw outputs out."""

    name: str
    rows_per_call: int  # crops per call: large enough to amortise the call, small enough for caches and memory

    def predict(self, rows: np.ndarray) -> np.ndarray: ...


class LiteRTModel:
    """A LiteRT interpreter over an exported flatbuffer. One per process: an interpreter is not thread-safe."""

    name = "litert"
    # XNNPACK's crops a second are flat from about 32 rows and fall past ~100 (caches): see docs/serving.md.
    rows_per_call = 48

    def __init__(self, flatbuffer: bytes, threads: int = DEFAULT_THREADS) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._buffer = flatbuffer  # the interpreter reads the model from this buffer for its whole life
        with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every load
            self._interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        first = self._shape is None
        if rows.shape != self._shape:
            # Re-planning the tensors costs about a millisecond; a worker's batches repeat a few shapes.
            self._interpreter.resize_tensor_input(self._input, list(rows.shape), strict=False)
            with _quiet_stderr() if first else contextlib.nullcontext():
                self._interpreter.allocate_tensors()
            self._shape = rows.shape
        self._interpreter.set_tensor(self._input, rows)
        with _quiet_stderr() if first else contextlib.nullcontext():  # the delegate's note comes on first use
            self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output))


class KerasModel:
    """The ``.keras`` file through TensorFlow: for versions without an exported file, and for training's checks."""

    name = "keras"
    rows_per_call = 512

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self._predict = _compile_predict(model, size)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(rows))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for a moment: the interpreter's C++ start-up note bypasses Python's logging. Errors
    still arrive as Python exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_runtime(model_path: Path, size: int, exported: ModelFile | None, threads: int | None = None) -> Runtime:
    """The runtime for a model version: LiteRT over its exported file (checked against its recorded SHA-256;
    a mismatch raises ``ModelFileMismatch``), else Keras over the ``.keras`` file."""
    if exported is not None:
        return LiteRTModel(verified_bytes(exported), threads or scoring_threads())
    log.warning("%s has no exported runtime file: scoring it with Keras (imports TensorFlow). "
                "Run `fakewatch export-model %s` to serve it with LiteRT.", model_path.name, model_path)
    import keras

    return KerasModel(keras.saving.load_model(model_path, compile=False), size)


def _compile_predict(model: Any, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """A traced inference function with a fixed signature, so every batch size reuses one graph."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)], reduce_retracing=True)
    def predict(rows: tf.Tensor) -> tf.Tensor:
        return model(rows, training=False)

    return lambda rows: predict(tf.constant(rows, dtype=tf.float32)).numpy()
