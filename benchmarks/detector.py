"""Benchmark the detector against the seed CNN and print JSON: AUC and more per test split, robustness to
JPEG 75 at 3/4 size, calibration (ECE) on the combined test splits, false alarms on ordinary photos, speed.

    python benchmarks/detector.py [--model models/shipped/default.keras] [--seed-model var/models/seed.keras]
                                  [--data /work/shared/data] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model_metadata import SHIPPED_MODEL
from models.cli import configure_tensorflow
from models.data import list_items, load_items
from models.evaluate import count_verdicts, jpeg75_three_quarters
from models.metrics import compute_metrics
from models.preprocessing import decode_image_file
from models.serving import Detector

FACE_SETS = ["faces-stylegan2", "faces-faceswap", "faces-photoshop"]
SPEED_FILES = 256


def ordinary_photos() -> dict[str, Any]:
    """The photos that ship in skimage.data and sklearn: every one should be scored real."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in
              ["astronaut", "camera", "cat", "coffee", "rocket", "coins", "hubble_deep_field"]}
    samples = load_sample_images()
    photos.update({Path(f).stem: image for f, image in zip(samples.filenames, samples.images, strict=True)})
    return {name: Image.fromarray(array).convert("RGB") for name, array in photos.items()}


def evaluate_splits(detectors: dict[str, Detector], data: Path) -> dict[str, Any]:
    """Per-split metrics, robustness and combined calibration for every detector."""
    report: dict[str, Any] = {name: {"splits": {}, "robust_jpeg75_3q": {}} for name in detectors}
    combined: dict[str, tuple[list[float], list[int]]] = {name: ([], []) for name in detectors}
    for dataset in FACE_SETS + ["real-extra"]:
        loaded = load_items(list_items(data / dataset, "test"))
        degraded = [jpeg75_three_quarters(image) for image in loaded.images]
        for name, detector in detectors.items():
            scores = detector.score(loaded.images)
            metrics = compute_metrics(scores, loaded.labels, detector.threshold)
            metrics["verdicts"] = count_verdicts(scores, detector.threshold, detector.band)
            report[name]["splits"][dataset] = metrics
            combined[name][0].extend(scores)
            combined[name][1].extend(loaded.labels)
            robust = compute_metrics(detector.score(degraded), loaded.labels, detector.threshold)
            report[name]["robust_jpeg75_3q"][dataset] = {key: robust[key] for key in ("roc_auc", "fpr_at_threshold",
                                                                                       "accuracy", "ece")}
    for name, detector in detectors.items():
        entry = report[name]
        aucs = [entry["splits"][d]["roc_auc"] for d in FACE_SETS]
        robust_aucs = [entry["robust_jpeg75_3q"][d]["roc_auc"] for d in FACE_SETS]
        entry["mean_auc"] = float(np.mean(aucs))
        entry["mean_auc_robust"] = float(np.mean(robust_aucs))
        entry["robust_auc_drop"] = entry["mean_auc"] - entry["mean_auc_robust"]
        scores, labels = combined[name]
        entry["combined_test"] = compute_metrics(scores, labels, detector.threshold)
    return report


def false_alarms(detector: Detector) -> dict[str, Any]:
    photos = ordinary_photos()
    scores = detector.score(list(photos.values()))
    from core.policy import decide_verdict

    rows = {name: {"score": round(s, 4), "verdict": decide_verdict(s, detector.threshold, detector.band)}
            for name, s in zip(photos, scores, strict=True)}
    return {"photos": rows, "all_real": all(row["verdict"] == "real" for row in rows.values())}


def measure_speed(detector: Detector, files: list[Path], batch: int = 32) -> dict[str, float]:
    """Images per second from file to score, batched; and milliseconds for one image alone (median)."""
    detector.score([decode_image_file(files[0])])  # warm up the traced graph
    started = time.perf_counter()
    for start in range(0, len(files), batch):
        detector.score([decode_image_file(path) for path in files[start : start + batch]])
    per_second = len(files) / (time.perf_counter() - started)
    single = []
    for path in files[:40]:
        started = time.perf_counter()
        detector.score([decode_image_file(path)])
        single.append((time.perf_counter() - started) * 1000)
    return {"images_per_s_batched": round(per_second, 1), "batch": batch,
            "single_image_ms_median": round(statistics.median(single), 1),
            "single_image_ms_p90": round(float(np.percentile(single, 90)), 1), "files": len(files)}


def speed_files(data: Path) -> list[Path]:
    """A fixed mix of test files from every set (JPEG 300 px, PNG 112 px, large real photos)."""
    files = [path for dataset in FACE_SETS + ["real-extra"] for path, _ in list_items(data / dataset, "test")]
    rng = np.random.default_rng(0)
    return [files[i] for i in rng.choice(len(files), size=min(SPEED_FILES, len(files)), replace=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--seed-model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true", help="Only measure speed and false alarms.")
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    detectors = {"default": Detector.load(args.model)}
    if args.seed_model:
        detectors["seed"] = Detector.load(args.seed_model)
    result: dict[str, Any] = {
        "models": {name: {"version": d.version, "threshold": d.threshold, "band": d.band,
                          "size_mb": round(Path(path).stat().st_size / 2**20, 2)}
                   for (name, d), path in zip(detectors.items(), [args.model, args.seed_model], strict=True)},
        "cpu_threads": args.threads,
    }
    if not args.skip_eval:
        result["evaluation"] = evaluate_splits(detectors, args.data)
    result["false_alarms"] = {name: false_alarms(d) for name, d in detectors.items()}
    files = speed_files(args.data)
    result["speed"] = {name: measure_speed(d, files) for name, d in detectors.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
