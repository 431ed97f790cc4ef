"""Evaluate a model file on a dataset split: the numbers ``fakewatch evaluate`` prints as JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.enums import Verdict
from core.policy import decide_verdict
from models.augment import reencode_jpeg
from models.data import list_items, load_items
from models.metrics import compute_metrics
from models.serving import Detector

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Image.Image]


def jpeg75_three_quarters(image: Image.Image) -> Image.Image:
    """The robustness check: resize to 3/4 of the size, then re-encode at JPEG quality 75."""
    width, height = image.size
    smaller = image.resize((max(1, width * 3 // 4), max(1, height * 3 // 4)), Image.Resampling.BICUBIC)
    return reencode_jpeg(smaller, 75)


def evaluate(
    model: str | Path | Detector,
    dataset_dir: str | Path,
    split: str = "test",
    transform: Transform | None = None,
    roc_png: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a model on ``dataset_dir``'s split (or a bare ``{real,fake}/`` folder) at its own threshold."""
    detector = model if isinstance(model, Detector) else Detector.load(model)
    loaded = load_items(list_items(dataset_dir, split))
    images = [transform(image) for image in loaded.images] if transform else loaded.images
    scores = detector.score(images)
    report = {
        "model_version": detector.version,
        "dataset": str(dataset_dir),
        "split": split,
        **compute_metrics(scores, loaded.labels, detector.threshold),
        "skipped": [{"path": str(path), "error": error} for path, error in loaded.skipped],
    }
    report["verdicts"] = count_verdicts(scores, detector.threshold, detector.band)
    if roc_png is not None and report["roc_auc"] is not None:
        plot_roc(np.asarray(scores), np.asarray(loaded.labels), Path(roc_png), detector.version)
        report["roc_png"] = str(roc_png)
    return report


def count_verdicts(scores: Sequence[float], threshold: float, band: float) -> dict[str, int]:
    """How many images the verdict policy calls real, uncertain and fake."""
    counts = {verdict.value: 0 for verdict in Verdict}
    for score in scores:
        counts[decide_verdict(score, threshold, band)] += 1
    return counts


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """The ROC curve as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, scores):.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.set_title(title, fontsize=8)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def ordinary_photos() -> dict[str, Image.Image]:
    """The nine photos that ship inside skimage and scikit-learn wheels (no download), by name: genuine photos of
    other collections than the training data, every one of which the shipped model must call real."""
    import skimage.data  # seconds to import; only when asked
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in
              ["astronaut", "camera", "cat", "coffee", "rocket", "coins", "hubble_deep_field"]}
    samples = load_sample_images()
    photos.update({Path(f).stem: image for f, image in zip(samples.filenames, samples.images, strict=True)})
    return {name: Image.fromarray(array).convert("RGB") for name, array in photos.items()}
