"""The detector package: preprocessing, training both architectures, metrics with known answers, evaluation,
the score command on corrupt and odd-format files, and the shipped default model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from core.model_metadata import SHIPPED_MODEL, file_sha256, metadata_path, read_metadata
from core.policy import decide_verdict
from fakewatch.score_command import score_command
from models.augment import _random_offset, augment_crop
from models.cli import evaluate_command
from models.data import load_items
from models.evaluate import evaluate, ordinary_photos
from models.metrics import compute_metrics, expected_calibration_error, flag_bound, operating_point
from models.preprocessing import crop_grid, grid_offsets, prepare
from models.serving import IMAGES_PER_GROUP, Detector
from models.train import TrainConfig, TrainingCancelled, train
from tests.fixtures_models import GENTLE

REQUIRED_METADATA = {"name", "architecture", "input_size", "preprocessing", "threshold", "band", "training_data",
                     "metrics", "sha256", "created_at"}


def test_importing_models_cli_and_serving_does_not_load_tensorflow() -> None:
    code = "import sys, models.cli, models.serving; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_crop_grid_takes_native_crops_and_upscales_small_images() -> None:
    big = Image.fromarray(np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8))
    crops = crop_grid(big, 64, 3)
    assert crops.shape == (9, 64, 64, 3)
    assert np.array_equal(crops[0], np.asarray(big)[:64, :64])  # top-left crop is untouched pixels
    assert np.array_equal(crops[-1], np.asarray(big)[-64:, -64:])
    small = crop_grid(Image.new("RGB", (20, 40), "red"), 64, 3)
    assert small.shape[1:] == (64, 64, 3)
    rows, counts = prepare([big, Image.new("L", (70, 70))], {"kind": "crops", "crop_size": 64, "grid": 2})
    assert counts == [4, 4] and rows.shape == (8, 64, 64, 3)


def test_crop_span_keeps_crop_centres_in_the_middle_of_each_side() -> None:
    assert grid_offsets(300, 96, 3) == [0, 102, 204]  # span 1: edge to edge
    assert grid_offsets(300, 96, 3, span=0.34) == [51, 102, 153]  # centres 99..201: the middle third
    assert grid_offsets(112, 96, 3, span=0.34) == [0, 8, 16]  # a small image is still covered
    assert grid_offsets(96, 96, 3, span=0.34) == [0]
    rows, counts = prepare([Image.new("RGB", (300, 300))], {"kind": "crops", "crop_size": 96, "grid": 3,
                                                            "span": 0.34})
    assert counts == [9]
    # Training windows come from the same central part, uniformly.
    offsets = np.array([_random_offset(300, 112, 0.34, np.random.default_rng(i)) for i in range(500)])
    assert offsets.min() >= 300 * 0.33 - 56 - 1 and offsets.max() <= 300 * 0.67 - 56 + 1
    wide = np.array([_random_offset(300, 112, 1.0, np.random.default_rng(i)) for i in range(500)])
    assert wide.min() < 20 and wide.max() > 168


def test_augment_crop_returns_one_crop_of_the_model_size() -> None:
    rng = np.random.default_rng(0)
    for size in [(300, 300), (50, 30), (1000, 200)]:
        crop = augment_crop(Image.new("RGB", size, "blue"), 64, rng)
        assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def test_metrics_on_known_answers() -> None:
    scores = [0.1, 0.2, 0.6, 0.4, 0.8, 0.9]
    labels = [0, 0, 0, 1, 1, 1]
    m = compute_metrics(scores, labels, threshold=0.5)
    assert m["counts"] == {"real": 3, "fake": 3, "total": 6}
    assert m["confusion_matrix"]["rows_true_cols_predicted"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(4 / 6)
    assert m["fpr_at_threshold"] == pytest.approx(1 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (fake, real) pairs are ordered correctly
    # Bins: [0.1] -> |0.1-0|, [0.2] -> |0.2-0|, [0.4] -> |0.4-1|, [0.6] -> |0.6-0|, [0.8], [0.9] -> 0.2, 0.1
    assert m["ece"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.6 + 0.2 + 0.1) / 6)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0
    only_real = compute_metrics([0.2, 0.7], [0, 0], threshold=0.5)
    assert only_real["roc_auc"] is None and only_real["fpr_at_threshold"] == 0.5


def test_operating_point_keeps_flagged_reals_under_the_cap() -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.uniform(0, 0.45, 200), rng.uniform(0.3, 1, 200)
    threshold, band = operating_point(real, max_flagged=0.04, max_fake_fpr=0.01)
    real_bound, fake_bound = threshold - band, threshold + band
    assert (real >= real_bound).mean() <= 0.04  # flagged: fake or uncertain
    assert (real >= fake_bound).mean() <= 0.01  # called fake
    assert real_bound <= 0.5 <= fake_bound and fake_bound - real_bound >= 0.1 - 1e-9
    assert (fake >= real_bound).mean() > 0.3
    assert flag_bound([0.1, 0.2, 0.3, 0.9], 0.25) == pytest.approx(0.3, abs=1e-5)  # one of four may sit above


class BrightnessDetector(Detector):
    """A stand-in model with known answers: P(fake) is the image's mean brightness."""

    def __init__(self) -> None:
        self.version, self.threshold, self.band, self.metadata = "brightness", 0.5, 0.1, {}

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        return [float(np.asarray(image.convert("L")).mean() / 255) for image in images]


def test_evaluate_reports_known_numbers_and_skips_corrupt_files(tmp_path: Path) -> None:
    for label, shades in {"real": [10, 40, 200], "fake": [250, 230, 100]}.items():
        folder = tmp_path / "test" / label
        folder.mkdir(parents=True)
        for index, shade in enumerate(shades):
            Image.new("RGB", (32, 32), (shade,) * 3).save(folder / f"{index}.png")
    (tmp_path / "test" / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = evaluate(BrightnessDetector(), tmp_path, "test")
    assert report["counts"] == {"real": 3, "fake": 3, "total": 6}
    assert [item["path"].endswith("broken.jpg") for item in report["skipped"]] == [True]
    assert report["confusion_matrix"]["rows_true_cols_predicted"] == [[2, 1], [1, 2]]
    assert report["roc_auc"] == pytest.approx(8 / 9)
    assert report["verdicts"] == {"real": 3, "uncertain": 0, "fake": 3}
    # A bare {real,fake}/ folder is accepted as well.
    assert evaluate(BrightnessDetector(), tmp_path / "test")["counts"]["total"] == 6


def test_training_reads_images_larger_than_an_upload_may_be(tmp_path: Path) -> None:
    """Datasets are a person's own files, decoded without the API's upload caps: a 42 MP photo is trained on
    (an upload that size is refused with too_many_pixels), not skipped."""
    big = tmp_path / "big.png"
    Image.new("L", (7_000, 6_000), 128).save(big)
    loaded = load_items([(big, 1)])
    assert loaded.skipped == [] and loaded.labels == [1] and loaded.images[0].size == (7_000, 6_000)


def write_shade_dataset(root: Path) -> Path:
    """A dataset a whole-image CNN learns in a few steps: noisy dark images are real, noisy bright ones fake."""
    rng = np.random.default_rng(5)
    for split, count in {"train": 16, "valid": 6, "test": 10}.items():
        for label, mean in (("real", 70), ("fake", 180)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(rng.normal(mean, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{index:03d}.png")
    return root


def test_default_architecture_learns_the_tiny_dataset(tiny_model_path: Path, tiny_dataset: Path) -> None:
    meta = read_metadata(tiny_model_path)
    assert meta.keys() >= REQUIRED_METADATA
    assert meta["architecture"] == "default" and meta["sha256"] == file_sha256(tiny_model_path)
    assert 0 < meta["threshold"] < 1 and 0 <= meta["band"] < 0.5
    assert meta["training_data"]["train"] == {"real": 16, "fake": 16}
    assert meta["preprocessing"]["span"] == 1.0 and meta["training"]["crops_per_image"] == 6
    assert tiny_model_path.with_name("tiny-curves.png").stat().st_size > 1000
    assert not tiny_model_path.with_name("tiny.checkpoint.keras").exists()
    detector = Detector.load(tiny_model_path)
    scores = detector.score([Image.new("RGB", (100, 80), "white"), Image.new("RGB", (640, 480), "black")])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert detector.score([]) == []
    # It learned: on the 40 held-out test images (never trained or selected on) it ranks fakes above reals far
    # better than a coin. (Its threshold is chosen to flag at most a few percent of 6 validation reals, so accuracy
    # at that threshold says little here.)
    report = evaluate(detector, tiny_dataset, "test")
    assert report["counts"]["total"] == 40 and report["roc_auc"] >= 0.7, report


def test_scoring_many_images_in_groups_matches_scoring_them_one_by_one(tiny_model_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (int(rng.integers(60, 200)), 120, 3), dtype=np.uint8))
              for _ in range(IMAGES_PER_GROUP + 5)]
    detector = Detector.load(tiny_model_path)
    together = detector.score(images)
    alone = [detector.score([image])[0] for image in images[:3] + images[-3:]]
    assert len(together) == len(images)
    assert together[:3] + together[-3:] == pytest.approx(alone, abs=1e-5)


def test_seed_architecture_learns_what_it_can_see(tmp_path: Path) -> None:
    shades = write_shade_dataset(tmp_path / "shades")
    path = train(TrainConfig([shades], arch="seed", epochs=2, out=tmp_path / "seed.keras", batch_size=16, verbose=0))
    meta = read_metadata(path)
    assert meta["architecture"] == "seed" and meta["input_size"] == 150 and meta["output"] == "softmax2"
    assert meta["history"]["loss"] and meta["history"]["val_accuracy"]
    report = evaluate(path, shades, "test")
    assert report["accuracy"] >= 0.9 and report["roc_auc"] >= 0.9, report


def test_fine_tuning_from_items_reports_epochs_and_can_be_cancelled(
    tiny_dataset: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    items = [(path, 1 if path.parent.name == "fake" else 0) for path in sorted(tiny_dataset.glob("train/*/*.png"))]
    epochs: list[tuple[int, dict]] = []
    path = train(TrainConfig(items=items, init_from=tiny_model_path, epochs=2, out=tmp_path / "tuned.keras",
                             batch_size=16, crop_span=1.0, on_epoch=lambda epoch, logs: epochs.append((epoch, logs)),
                             verbose=0, recipe=GENTLE))
    assert [epoch for epoch, _ in epochs] == [1, 2] and "val_loss" in epochs[0][1]
    assert read_metadata(path)["preprocessing"]["span"] == 1.0  # the override reaches serving
    assert read_metadata(path)["training_data"]["valid"]["real"] + read_metadata(path)["training_data"]["valid"]["fake"] == 4
    # It still ranks the held-out test split well (its threshold, chosen on 4 held-out images, is too coarse to
    # judge accuracy by).
    tuned = evaluate(path, tiny_dataset, "test")
    assert tuned["roc_auc"] >= 0.6, tuned
    with pytest.raises(TrainingCancelled):
        train(TrainConfig(items=items, epochs=1, out=tmp_path / "cancelled.keras", batch_size=16,
                          should_stop=lambda: True, verbose=0))
    assert not (tmp_path / "cancelled.keras").exists()


def write_odd_files(folder: Path) -> dict[str, bool]:
    """Files of many formats; the value says whether the file should score."""
    folder.mkdir()
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 255, (120, 90, 3), dtype=np.uint8))
    photo.save(folder / "photo.jpg", quality=90)
    photo.convert("L").save(folder / "grey.png")
    photo.convert("RGBA").save(folder / "alpha.png")
    photo.convert("P").save(folder / "palette.gif")
    photo.save(folder / "photo.webp")
    Image.new("RGB", (5, 3), "red").save(folder / "tiny.bmp")
    (folder / "notes.jpg").write_text("this is text, not a picture")
    data = (folder / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "empty.png").write_bytes(b"")
    return {"photo.jpg": True, "grey.png": True, "alpha.png": True, "palette.gif": True, "photo.webp": True,
            "tiny.bmp": True, "notes.jpg": False, "truncated.jpg": False, "empty.png": False}


def test_score_jsonl_scores_odd_formats_and_reports_corrupt_files(tiny_model_path: Path, tmp_path: Path) -> None:
    expected = write_odd_files(tmp_path / "mixed")
    result = CliRunner().invoke(score_command, [str(tmp_path / "mixed"), "--model", str(tiny_model_path), "--jsonl"])
    assert result.exit_code == 1  # some files could not be scored
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(row["path"]).name for row in rows} == set(expected)
    version = read_metadata(tiny_model_path)["name"]
    for row in rows:
        if expected[Path(row["path"]).name]:
            # The fixed fields, and beside them what decided the verdict and the file's provenance.
            assert set(row) == {"path", "score", "verdict", "model_version", "verdict_source", "confidence",
                                "provenance", "reason", "verdict_text"}
            assert 0 <= row["score"] <= 1 and row["verdict"] in {"real", "fake", "uncertain"}
            assert row["model_version"] == version
        else:
            assert set(row) == {"path", "error", "score"} and row["score"] is None and row["error"]


def test_evaluate_command_prints_json(tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    roc = tmp_path / "roc.png"
    result = CliRunner().invoke(evaluate_command, [str(tiny_model_path), str(tiny_dataset), "--roc", str(roc)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"real": 20, "fake": 20, "total": 40} and report["split"] == "test"
    assert report["roc_auc"] >= 0.6 and roc.stat().st_size > 1000


def test_shipped_default_model_calls_the_photos_from_wheels_real() -> None:
    path = SHIPPED_MODEL
    meta = read_metadata(path)
    assert metadata_path(path).exists() and meta["architecture"] == "default"
    assert meta["sha256"] == file_sha256(path) and path.stat().st_size <= 20 * 1024 * 1024
    detector = Detector.load(path)
    photos = ordinary_photos()
    scores = detector.score(list(photos.values()))
    verdicts = {name: decide_verdict(score, detector.threshold, detector.band)
                for name, score in zip(photos, scores, strict=True)}
    # Nine genuine photos from collections it never trained on: none may be flagged (fake or uncertain), since a
    # false 'fake' is the costliest mistake a moderation tool makes.
    assert len(verdicts) == 9 and set(verdicts.values()) == {"real"}, dict(zip(photos, scores, strict=True))


def test_train_config_normalises_and_rejects_bad_values(tmp_path: Path) -> None:
    config = TrainConfig(["a", tmp_path], items=[(Path("x.png"), True)], out="m.keras", init_from="base.keras")
    assert config.data_dirs == (Path("a"), tmp_path) and config.items == ((Path("x.png"), 1),)
    assert config.out == Path("m.keras") and config.init_from == Path("base.keras")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    for bad in ({"epochs": 0}, {"batch_size": -1}, {"crop_span": 1.5}, {"learning_rate": 0.0},
                {"max_flagged": 1.0}, {"arch": "no-such-arch"}, {"time_budget_s": 0}):
        with pytest.raises(ValueError):
            TrainConfig(["a"], **bad)
