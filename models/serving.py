"""Load a model version once and score decoded images in batches: the API the scoring worker uses.

Importing this module does not import TensorFlow, and neither does :meth:`Detector.load` for a model version with
an exported runtime file (models/export.py): it scores with LiteRT (models/runtime.py). The metadata JSON beside each
``.keras`` file is plain JSON so the backend can read it without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.check_evidence import Region
from core.model_metadata import model_files, read_metadata, runtime_file, verified_bytes
from models.preprocessing import crop_boxes, input_size, prepare
from models.runtime import KerasModel, Runtime, load_runtime

# Images whose crops are built at once, so scoring a whole dataset never holds all its crops in memory.
IMAGES_PER_GROUP = 64


@dataclass(frozen=True)
class Scored:
    """An image's P(fake) and the regions it was pooled from."""

    score: float
    regions: list[Region]


def rows_to_logits(outputs: np.ndarray, output: str) -> np.ndarray:
    """One logit of P(fake) per model row, whatever the head."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if output == "softmax2":
        eps = 1e-7
        return np.log(outputs[:, 1] + eps) - np.log(outputs[:, 0] + eps)
    return outputs.reshape(-1)


def pool_logits(logits: np.ndarray, counts: Sequence[int], pool: str = "mean") -> np.ndarray:
    """Pool per-crop logits into one per image (their mean, the only pooling models are trained with)."""
    if pool != "mean":
        raise ValueError(f"unknown pooling {pool!r}")
    ends = np.cumsum(counts)
    return np.asarray([float(np.mean(logits[end - count : end])) for count, end in zip(counts, ends, strict=True)],
                      dtype=np.float64)


def calibrate(logits: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """P(fake) from pooled logits with the Platt scaling fitted on validation data (identity if none)."""
    a = float((calibration or {}).get("a", 1.0))
    b = float((calibration or {}).get("b", 0.0))
    return 1.0 / (1.0 + np.exp(-(a * logits + b)))


class Detector:
    """One loaded model version. ``score`` returns P(fake) per image."""

    def __init__(self, runtime: Runtime, metadata: dict[str, Any]) -> None:
        self.runtime = runtime
        self.metadata = metadata
        self.version: str = metadata["name"]
        self.threshold: float = float(metadata["threshold"])
        self.band: float = float(metadata["band"])
        self.preprocessing: dict[str, Any] = metadata["preprocessing"]
        self._predict = runtime.predict

    @classmethod
    def load(cls, model_path: str | Path, threads: int | None = None) -> Detector:
        """A model version from its ``.keras`` path and the metadata JSON beside it: scored by LiteRT when the
        version lists an exported file, else by Keras. Every file used is checked against the SHA-256 its version
        recorded first (``ModelFileMismatch``, code ``invalid_model``, when it does not match)."""
        model_path = Path(model_path)
        metadata = read_metadata(model_path)
        exported = runtime_file(model_path, metadata)
        if exported is None:  # the Keras fallback loads the .keras file: check it as the export would be
            verified_bytes(model_files(model_path, metadata)[0])
        return cls(load_runtime(model_path, input_size(metadata["preprocessing"]), exported, threads), metadata)

    @classmethod
    def from_keras(cls, model: Any, metadata: dict[str, Any]) -> Detector:
        """A detector over an in-memory Keras model (training's calibration and checks)."""
        return cls(KerasModel(model, input_size(metadata["preprocessing"])), metadata)

    def warm(self) -> None:
        """Trace the inference graph once on a blank image, so the first real image does not pay for it (seconds on
        a busy CPU)."""
        self.raw_logits([Image.new("RGB", (input_size(self.preprocessing),) * 2)])

    def raw_logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Pooled, uncalibrated logits per image (what calibration is fitted on), for any number of images."""
        return np.asarray([pooled for pooled, _ in self._logits_in_groups(images)], dtype=np.float64)

    def _logits_in_groups(self, images: Sequence[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """(pooled logit, per-crop logits) per image, IMAGES_PER_GROUP images at a time."""
        results: list[tuple[float, np.ndarray]] = []
        for start in range(0, len(images), IMAGES_PER_GROUP):
            rows, counts = prepare(images[start : start + IMAGES_PER_GROUP], self.preprocessing)
            step = self.runtime.rows_per_call
            outputs = np.concatenate(
                [self._predict(rows[i : i + step]) for i in range(0, len(rows), step)]
            )
            logits = rows_to_logits(outputs, self.metadata.get("output", "logit"))
            pooled = pool_logits(logits, counts, self.preprocessing.get("pool", "mean"))
            ends = np.cumsum(counts)
            results += [(float(p), logits[end - count : end]) for p, count, end in zip(pooled, counts, ends, strict=True)]
        return results

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        """P(fake) for each decoded RGB image, batched internally."""
        return [float(p) for p in calibrate(self.raw_logits(images), self.metadata.get("calibration"))]

    def score_with_regions(self, images: Sequence[Image.Image]) -> list[Scored]:
        """P(fake) for each image and the score of each crop it was pooled from, with the crop's box in the
        image's pixels: the heat map a moderator sees. Crop scores use the image's calibration, so a crop at 0.9
        reads like an image at 0.9."""
        calibration = self.metadata.get("calibration")
        scored = []
        for image, (pooled, crops) in zip(images, self._logits_in_groups(images), strict=True):
            boxes = crop_boxes(image, self.preprocessing)
            crop_scores = calibrate(crops, calibration)
            regions = [Region(box=box, score=round(float(s), 4)) for box, s in zip(boxes, crop_scores, strict=True)]
            scored.append(Scored(score=float(calibrate(np.asarray([pooled]), calibration)[0]), regions=regions))
        return scored

