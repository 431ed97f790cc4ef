"""Pytest plugin with session-scoped detector fixtures (loaded by conftest: ``pytest_plugins``).

``tiny_dataset``: a generated dataset in the seed layout whose classes are learnable from pixels alone: real
images are native crops of photos that ship inside skimage and scikit-learn; fake images are crops whose pixels
were replaced by a 2x nearest-neighbour upsampling of their half-size copy (the trace generator upsampling
leaves). ``tiny_model_path``: a default-architecture model trained on it (144 steps: enough to beat chance on the
held-out test split, which tests/test_models.py checks), with metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.augment import AugmentRecipe

# The shipped recipe's recompression, resizing, blur and noise would erase the tiny dataset's one trace (a 2x
# nearest-neighbour upsampling) in most crops; tests train with flips, tone and colour changes only, so a few dozen
# steps learn it and the tests can assert that they did.
GENTLE = AugmentRecipe(downscale_p=0, blur_p=0, sharpen_p=0, noise_p=0, jpeg_p=0, jpeg_low_p=0)
SPLIT_SIZES = {"train": 16, "valid": 6, "test": 20}  # images per class
CROP = 96


def source_photos() -> list[np.ndarray]:
    """RGB photos bundled with skimage and scikit-learn (no download)."""
    import skimage.data  # noqa: PLC0415 - seconds to import; only when the dataset is made
    from sklearn.datasets import load_sample_images  # noqa: PLC0415

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.immunohistochemistry(), skimage.data.retina()]
    return photos + list(load_sample_images().images)


def upsample_trace(crop: np.ndarray) -> np.ndarray:
    """The crop's half-size copy blown back up with nearest neighbours: every 2x2 block becomes one colour."""
    half = Image.fromarray(crop).resize((CROP // 2, CROP // 2), Image.Resampling.BOX)
    return np.asarray(half.resize((CROP, CROP), Image.Resampling.NEAREST))


def write_tiny_dataset(root: Path, seed: int = 0) -> Path:
    """Write ``root/{train,valid,test}/{real,fake}/*.png`` and return root."""
    rng = np.random.default_rng(seed)
    photos = source_photos()
    for split, count in SPLIT_SIZES.items():
        for label in ("real", "fake"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                photo = photos[int(rng.integers(len(photos)))]
                top = int(rng.integers(0, photo.shape[0] - CROP))
                left = int(rng.integers(0, photo.shape[1] - CROP))
                crop = photo[top : top + CROP, left : left + CROP]
                pixels = upsample_trace(crop) if label == "fake" else crop
                # Neutral names: labels come from folders only.
                Image.fromarray(pixels).save(folder / f"img_{index:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def tiny_model_path(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.train import TrainConfig, train  # noqa: PLC0415 - TensorFlow, only when a test needs the model

    out = tmp_path_factory.mktemp("tiny_model") / "tiny.keras"
    return train(TrainConfig([tiny_dataset], arch="default", epochs=12, crops_per_image=6, out=out, batch_size=16,
                             verbose=0, recipe=GENTLE))
