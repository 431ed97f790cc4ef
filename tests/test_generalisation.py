"""Leave-one-out folds (models/generalisation.py) on tiny generated datasets: what each fold trains on and scores,
the bootstrap intervals, and a fold whose model must beat chance on the dataset it never saw."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.generalisation import (
    Fold,
    base_datasets,
    bootstrap_interval,
    describe_scores,
    fold_data,
    left_out_datasets,
    run_fold,
    standard_folds,
)
from models.train import TrainConfig
from tests.fixtures_models import GENTLE, SPLIT_SIZES, write_tiny_dataset


def write_manifest(dataset: Path, generator_of: dict[str, str]) -> None:
    """A manifest.csv naming a generator for each fake, as the shared diffusion sets have."""
    rows = []
    for path in sorted(dataset.glob("*/*/*.png")):
        cls = path.parent.name
        rows.append({"name": path.name, "split": path.parent.parent.name, "cls": cls,
                     "gen": generator_of[path.name] if cls == "fake" else "photo"})
    with (dataset / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "split", "cls", "gen"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_dataset(root / "alpha", seed=1)
    write_tiny_dataset(root / "beta", seed=2)
    trio = write_tiny_dataset(root / "diffusion_trio_vs_imagenet", seed=3)
    # Fakes alternate between two generators; a third dataset is made by one of them only.
    names = sorted({path.name for path in trio.glob("*/fake/*.png")})
    write_manifest(trio, {name: ("DALL-E 2" if i % 2 else "Stable Diffusion 1.5") for i, name in enumerate(names)})
    cats = write_tiny_dataset(root / "cats", seed=4)
    write_manifest(cats, {path.name: "Stable Diffusion 2.1" for path in cats.glob("*/fake/*.png")})
    return root


def test_standard_folds_name_every_dataset_and_generator(data_root: Path) -> None:
    names = [fold.name for fold in standard_folds(data_root)]
    assert names == ["alpha", "beta", "cats", "diffusion_trio_vs_imagenet",
                     "generator: DALL-E 2", "generator: Stable Diffusion", "generator: Midjourney"]


def test_a_dataset_fold_scores_all_of_it_and_trains_on_none_of_it(data_root: Path) -> None:
    data = fold_data(Fold("alpha", "alpha"), data_root)
    scored = {path for items in data.scored.values() for path, _ in items}
    assert set(data.scored) == {"train", "valid", "test"} and len(scored) == 2 * sum(SPLIT_SIZES.values())
    trained = {path for path, _ in data.train + data.valid}
    assert not scored & trained
    assert all(path.parts[-4] != "alpha" for path in trained)
    assert {path.parts[-4] for path in trained} == {"beta", "cats", "diffusion_trio_vs_imagenet"}


def test_a_generator_fold_drops_the_generator_everywhere_and_scores_its_fakes_against_unseen_reals(
    data_root: Path,
) -> None:
    data = fold_data(Fold("generator: Stable Diffusion", "diffusion_trio_vs_imagenet", "Stable Diffusion"),
                     data_root)
    assert set(data.dropped) == {"cats"}  # every fake of it is Stable Diffusion
    scored = [item for items in data.scored.values() for item in items]
    trained = {path for path, _ in data.train + data.valid}
    assert not {path for path, _ in scored} & trained
    # Scored: the generator's fakes from every split, and reals from valid and test only.
    assert {path.parts[-3] for path, label in scored if label == 0} == {"valid", "test"}
    assert {path.parts[-3] for path, label in scored if label == 1} == {"train", "valid", "test"}
    trio_trained = [(path, label) for path, label in data.train if path.parts[-4] == "diffusion_trio_vs_imagenet"]
    assert {label for _, label in trio_trained} == {0, 1}  # its train reals and the other generator's fakes
    assert all("cats" not in path.parts for path in trained)


def test_bootstrap_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    scores = labels + rng.normal(0, 0.8, 200)
    interval = bootstrap_interval(labels, scores, lambda y, s: float(roc_auc_score(y, s)), rounds=300)
    assert interval is not None
    low, high = interval
    assert low < roc_auc_score(labels, scores) < high and high - low < 0.2


def test_describe_scores_counts_flagged_reals_and_caught_fakes() -> None:
    def verdict(score: float) -> str:
        return "fake" if score >= 0.6 else "real" if score < 0.4 else "uncertain"

    report = describe_scores([0.1, 0.2, 0.5, 0.9, 0.7, 0.45], [0, 0, 0, 1, 1, 1], verdict, rounds=50)
    assert report["reals_flagged"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["fakes_called_fake"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["fakes_flagged"] == 1.0 and 0 <= report["auc"] <= 1
    assert describe_scores([0.1, 0.7], [0, 0], verdict, rounds=10)["reals_flagged"] == 0.5  # one class: no AUC


def test_a_fold_model_beats_chance_on_the_dataset_it_never_saw(data_root: Path, tmp_path: Path) -> None:
    report = run_fold(Fold("alpha", "alpha"), data_root, tmp_path,
                      TrainConfig(epochs=4, steps_per_epoch=12, batch_size=16, patience=4, recipe=GENTLE),
                      rounds=100)
    pooled = report["all_splits"]
    per_class = sum(SPLIT_SIZES.values())
    assert pooled["count"] == {"real": per_class, "fake": per_class}
    # The upsampling trace is learnable from pixels: an unseen dataset with it must rank well above chance.
    assert pooled["auc"] >= 0.8, pooled
    assert pooled["auc_ci95"][0] > 0.5
    assert set(report["splits"]) == {"train", "valid", "test"}


def test_a_base_model_is_fine_tuned_only_for_folds_it_never_saw(data_root: Path, tmp_path: Path,
                                                                tiny_model_path: Path) -> None:
    base = tmp_path / "base.keras"
    shutil.copy(tiny_model_path, base)
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    meta["training_data"]["datasets"] = [str(data_root / "alpha")]
    base.with_suffix(".json").write_text(json.dumps(meta))
    assert base_datasets(base) == {"alpha"}
    # The Stable Diffusion fold also drops cats (made by Stable Diffusion 2.1); a base trained on cats is no base.
    sd = Fold("generator: Stable Diffusion", "diffusion_trio_vs_imagenet", "Stable Diffusion")
    assert left_out_datasets(sd, fold_data(sd, data_root)) == {"diffusion_trio_vs_imagenet", "cats"}

    config = TrainConfig(epochs=2, steps_per_epoch=6, batch_size=16, patience=2, recipe=GENTLE)
    seen = run_fold(Fold("alpha", "alpha"), data_root, tmp_path / "a", config, rounds=20, base=base)
    assert seen["init"] == "scratch"
    unseen = run_fold(Fold("beta", "beta"), data_root, tmp_path / "b", config, rounds=20, base=base)
    assert unseen["init"] == "base base.keras"
    # Fine-tuned from a model that learned the trace, it still ranks the unseen set well.
    assert unseen["all_splits"]["auc"] >= 0.7, unseen["all_splits"]
