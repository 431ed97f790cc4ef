"""Benchmark the detector against the seed CNN (trained on the same data) and print JSON: per test split AUC, TPR
at 5% FPR and verdicts; genuine photos flagged (pooled test reals, real-extra, the photos that ship in wheels);
fakes caught on the fakes-only set; genuine photos flagged after ordinary processing (the pooled test reals
downscaled by half and back, blurred by one pixel, denoised, sharpened, re-encoded at JPEG 60: ``models.pairs``'
processing, the same the aligned pairs train on); re-shared copies (downscaled and re-encoded on a grid);
calibration; the share of each image the crops cover (the heat map); speed from file to score.

    python benchmarks/detector.py [--model models/shipped/default.keras] [--seed-model var/models/seed.keras]
                                  [--data ../shared/data] [--threads 2] [--out benchmarks/detector-results.json]
    python benchmarks/detector.py --no-reshare-grid   # skip the 3x3 re-shared grid (the slowest part)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model_metadata import SHIPPED_MODEL
from core.policy import decide_verdict
from models.augment import reencode_jpeg
from models.cli import configure_tensorflow
from models.data import LoadedImages, list_items, load_items
from models.evaluate import count_verdicts, ordinary_photos
from models.metrics import compute_metrics
from models.pairs import PROCESSING, process
from models.preprocessing import coverage, crop_boxes, decode_image_file
from models.serving import Detector
from testbed.report import emit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Datasets whose pooled test reals must stay at most 5% flagged; faces-photoshop's reals are judged on their own.
FLAG_EXCLUDED = {"faces-photoshop"}
FAKES_ONLY = "sd_classimages_fakeonly"
REALS_ONLY = "real-extra"
# Re-shared copies: every pair of a downscale factor and a JPEG quality.
RESHARE_SCALES = (0.5, 0.65, 0.8)
RESHARE_QUALITIES = (60, 75, 90)
SPEED_FILES = 256


def reshare(image: Image.Image, scale: float, quality: int) -> Image.Image:
    """A re-shared copy: downscaled by ``scale`` (bicubic), then re-encoded as JPEG at ``quality``."""
    width, height = image.size
    smaller = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    return reencode_jpeg(smaller, quality)


def datasets(data: Path) -> list[Path]:
    return sorted(path for path in data.iterdir() if path.is_dir() and (path / "test").is_dir())


def verdict_share(scores: list[float], detector: Detector, flagged: bool) -> float | None:
    """The share called fake (or, with ``flagged``, fake or uncertain)."""
    if not scores:
        return None
    verdicts = [decide_verdict(s, detector.threshold, detector.band) for s in scores]
    return sum(v != "real" if flagged else v == "fake" for v in verdicts) / len(verdicts)


def evaluate_model(detector: Detector, tests: dict[str, LoadedImages], reshare_grid: bool) -> dict[str, Any]:
    """Every figure for one model on the test splits."""
    report: dict[str, Any] = {"splits": {}, "reshared": {}}
    pooled_reals: list[float] = []
    combined: tuple[list[float], list[int]] = ([], [])
    for name, loaded in tests.items():
        scores = detector.score(loaded.images)
        metrics = compute_metrics(scores, loaded.labels, detector.threshold)
        real_scores = [s for s, y in zip(scores, loaded.labels, strict=True) if y == 0]
        fake_scores = [s for s, y in zip(scores, loaded.labels, strict=True) if y == 1]
        report["splits"][name] = {
            "counts": metrics["counts"], "roc_auc": metrics["roc_auc"], "tpr_at_5pct_fpr": metrics["tpr_at_5pct_fpr"],
            "ece": metrics["ece"], "verdicts": count_verdicts(scores, detector.threshold, detector.band),
            "reals_flagged": verdict_share(real_scores, detector, flagged=True),
            "reals_called_fake": verdict_share(real_scores, detector, flagged=False),
            "fakes_caught": verdict_share(fake_scores, detector, flagged=False),
            "fakes_flagged": verdict_share(fake_scores, detector, flagged=True),
        }
        if name not in FLAG_EXCLUDED:
            pooled_reals += real_scores
        combined[0].extend(scores)
        combined[1].extend(loaded.labels)
        if reshare_grid and metrics["roc_auc"] is not None:
            report["reshared"][name] = reshared_aucs(detector, loaded)
    report["pooled_test_reals"] = {"count": len(pooled_reals), "excluding": sorted(FLAG_EXCLUDED),
                                   "flagged": verdict_share(pooled_reals, detector, flagged=True),
                                   "called_fake": verdict_share(pooled_reals, detector, flagged=False)}
    report["processed_test_reals"] = processed_reals(detector, tests)
    report["combined_test"] = {key: value for key, value in
                               compute_metrics(combined[0], combined[1], detector.threshold).items()
                               if key in ("counts", "roc_auc", "ece", "tpr_at_5pct_fpr")}
    both = [n for n, split in report["splits"].items() if split["roc_auc"] is not None]
    report["mean_auc"] = float(np.mean([report["splits"][n]["roc_auc"] for n in both]))
    if report["reshared"]:
        drops = [entry["mean_drop"] for entry in report["reshared"].values()]
        report["reshared_mean_auc_drop"] = float(np.mean(drops))
    return report


def processed_reals(detector: Detector, tests: dict[str, LoadedImages]) -> dict[str, Any]:
    """The pooled test reals (as ``pooled_test_reals``) after each ordinary processing: the share flagged (fake or
    uncertain) and called fake. The issue's bar: at most 5% flagged after each."""
    reals = [image for name, loaded in tests.items() if name not in FLAG_EXCLUDED
             for image, label in zip(loaded.images, loaded.labels, strict=True) if label == 0]
    result: dict[str, Any] = {"count": len(reals), "excluding": sorted(FLAG_EXCLUDED)}
    for kind in PROCESSING:
        if kind == "none":
            continue
        scores = detector.score([process(image, kind) for image in reals])
        result[kind] = {"flagged": verdict_share(scores, detector, flagged=True),
                        "called_fake": verdict_share(scores, detector, flagged=False)}
    return result


def reshared_aucs(detector: Detector, loaded: LoadedImages) -> dict[str, Any]:
    """AUC of re-shared copies on the scale x quality grid, and the mean drop against the originals."""
    from sklearn.metrics import roc_auc_score

    original = float(roc_auc_score(loaded.labels, detector.score(loaded.images)))
    grid = {}
    for scale, quality in product(RESHARE_SCALES, RESHARE_QUALITIES):
        copies = [reshare(image, scale, quality) for image in loaded.images]
        grid[f"{scale}x_q{quality}"] = round(float(roc_auc_score(loaded.labels, detector.score(copies))), 4)
    return {"original": round(original, 4), "grid": grid,
            "mean_drop": round(original - float(np.mean(list(grid.values()))), 4)}


def false_alarms(detector: Detector) -> dict[str, Any]:
    photos = ordinary_photos()
    scores = detector.score(list(photos.values()))
    rows = {name: {"score": round(s, 4), "verdict": decide_verdict(s, detector.threshold, detector.band)}
            for name, s in zip(photos, scores, strict=True)}
    return {"photos": rows, "flagged": sum(row["verdict"] != "real" for row in rows.values())}


def crop_coverage(detector: Detector, tests: dict[str, LoadedImages]) -> dict[str, Any]:
    """Mean share of each image's area under at least one crop, per dataset (what the heat map can show)."""
    result = {}
    for name, loaded in tests.items():
        shares = [coverage(crop_boxes(image, detector.preprocessing), *image.size) for image in loaded.images]
        result[name] = round(float(np.mean(shares)), 3)
    sizes = [(1024, 1024), (1920, 1080), (4032, 3024)]
    result.update({f"{w}x{h}": round(coverage(crop_boxes(Image.new("RGB", (w, h)), detector.preprocessing), w, h), 3)
                   for w, h in sizes})
    return result


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
    """The same fixed mix of face-set and real-extra test files every earlier run measured (JPEG 300 px, PNG
    112 px, large real photos), so figures compare across model versions."""
    names = ["faces-stylegan2", "faces-faceswap", "faces-photoshop", "real-extra"]
    files = [path for name in names for path, _ in list_items(data / name, "test")]
    rng = np.random.default_rng(0)
    return [files[i] for i in rng.choice(len(files), size=min(SPEED_FILES, len(files)), replace=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--seed-model", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None,
                        help="The model this one replaces, measured beside it (test splits, false alarms, speed).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true", help="Only measure speed and false alarms.")
    parser.add_argument("--no-reshare-grid", action="store_true",
                        help="Skip the re-shared copies' AUC grid (nine rescorings of every test split).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    paths = {"default": args.model, **({"seed": args.seed_model} if args.seed_model else {}),
             **({"before": args.before} if args.before else {})}
    detectors = {name: Detector.load(path) for name, path in paths.items()}
    result: dict[str, Any] = {
        "models": {name: {"version": d.version, "threshold": d.threshold, "band": d.band,
                          "size_mb": round(paths[name].stat().st_size / 2**20, 2)}
                   for name, d in detectors.items()},
        "cpu_threads": args.threads,
    }
    if not args.skip_eval:
        tests = {path.name: load_items(list_items(path, "test")) for path in datasets(args.data)}
        result["evaluation"] = {name: evaluate_model(d, tests, reshare_grid=name != "before" and not args.no_reshare_grid)
                                for name, d in detectors.items()}
        result["crop_coverage"] = crop_coverage(detectors["default"], tests)
    result["false_alarms"] = {name: false_alarms(d) for name, d in detectors.items()}
    files = speed_files(args.data)
    result["speed"] = {name: measure_speed(d, files) for name, d in detectors.items()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
