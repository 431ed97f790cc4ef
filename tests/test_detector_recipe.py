"""The pieces of the detector recipe that need no trained model: balanced sampling across datasets, the crop grid
on large images and the boxes behind the heat map, the augmentation recipe and the synthetic fakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.augment import AugmentRecipe, augment_crop, upsampling_trace
from models.data import OTHER_GROUP, dataset_of, group_weights, sampling_probabilities
from models.metrics import flag_bound
from models.preprocessing import coverage, crop_boxes, crop_grid, crops_along, prepare

GRID = {"kind": "crops", "crop_size": 96, "grid": 4, "max_grid": 6, "span": 1.0}


def test_dataset_of_reads_the_seed_layout() -> None:
    assert dataset_of(Path("/d/cats/train/fake/a.jpg")) == "cats"
    assert dataset_of(Path("/d/cats/real/a.jpg")) == "cats"  # a bare {real,fake}/ folder
    assert dataset_of(Path("/var/images/ab/abcdef.jpg")) == OTHER_GROUP


def test_sampling_gives_each_class_half_and_tempers_dataset_sizes() -> None:
    items = ([(Path(f"/d/big/train/real/{i}.jpg"), 0) for i in range(900)]
             + [(Path(f"/d/small/train/real/{i}.jpg"), 0) for i in range(100)]
             + [(Path(f"/d/small/train/fake/{i}.jpg"), 1) for i in range(100)])
    p = sampling_probabilities(items, temper=0.5)
    assert p.sum() == pytest.approx(1.0)
    assert p[1000:].sum() == pytest.approx(0.5)  # the fakes get half the draws although they are 1 in 11
    big, small = p[:900].sum(), p[900:1000].sum()
    assert big / small == pytest.approx(3.0)  # sqrt(900) / sqrt(100), not 9 to 1
    equal = sampling_probabilities(items, temper=0.0)
    assert equal[:900].sum() == pytest.approx(equal[900:1000].sum())


def test_reviewed_images_can_get_a_fixed_share_of_the_draws() -> None:
    base = [(Path(f"/d/big/train/{c}/{i}.jpg"), int(c == "fake")) for c in ("real", "fake") for i in range(2000)]
    reviewed = [(Path(f"/var/images/{i:02d}/{i}.jpg"), i % 2) for i in range(20)]
    p = sampling_probabilities(base + reviewed, temper=0.5, shares={OTHER_GROUP: 0.4})
    assert p[-20:].sum() == pytest.approx(0.4) and p[:4000].sum() == pytest.approx(0.6)
    assert p[:2000].sum() == pytest.approx(0.3)  # the rest keeps its class balance
    # 17 reviewed reals and 3 reviewed fakes still give each class half of the reviewed share.
    lopsided = [(Path(f"/var/images/{i:02d}/{i}.jpg"), int(i < 3)) for i in range(20)]
    q = sampling_probabilities(base + lopsided, temper=0.5, shares={OTHER_GROUP: 0.4})
    assert q[-17:].sum() == pytest.approx(0.2) and q[4000:4003].sum() == pytest.approx(0.2)


def test_group_weights_give_small_collections_a_say() -> None:
    items = ([(Path(f"/d/big/valid/real/{i}.jpg"), 0) for i in range(400)]
             + [(Path(f"/d/small/valid/real/{i}.jpg"), 0) for i in range(16)])
    weights = group_weights(items, temper=0.5)
    assert weights[:400].sum() / weights[400:].sum() == pytest.approx(5.0)  # sqrt(400) / sqrt(16)
    # The small collection scores high: unweighted, its reals would all be flagged unnoticed.
    scores = np.r_[np.linspace(0, 0.3, 400), np.linspace(0.5, 0.6, 16)]
    assert flag_bound(scores, 0.04) < 0.5 < flag_bound(scores, 0.04, weights)


def test_large_images_get_more_crops_and_the_boxes_cover_most_of_them() -> None:
    assert crops_along(300, 96, 4, 6) == 4 and crops_along(1024, 96, 4, 6) == 6
    assert crops_along(1024, 96, 4, None) == 4  # without max_grid: a fixed grid, as older models have
    rows, counts = prepare([Image.new("RGB", (1024, 768)), Image.new("RGB", (300, 300))], GRID)
    assert counts == [36, 16] and rows.shape[1:] == (96, 96, 3)
    boxes = crop_boxes(Image.new("RGB", (512, 384)), GRID)
    assert len(boxes) == 16 and boxes[0] == (0, 0, 96, 96) and boxes[-1] == (416, 288, 512, 384)
    assert coverage(boxes, 512, 384) > 0.7
    assert coverage(crop_boxes(Image.new("RGB", (300, 300)), GRID), 300, 300) == 1.0


def test_boxes_match_the_pixels_each_crop_holds() -> None:
    array = np.random.default_rng(0).integers(0, 255, (200, 330, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    crops = crop_grid(image, 96, 4, 1.0, 6)
    for crop, (x0, y0, x1, y1) in zip(crops, crop_boxes(image, GRID), strict=True):
        assert np.array_equal(crop, array[y0:y1, x0:x1])


def test_boxes_of_a_small_upscaled_image_are_in_its_own_pixels() -> None:
    boxes = crop_boxes(Image.new("RGB", (48, 60)), GRID)
    assert all(0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 60 for x0, y0, x1, y1 in boxes)
    assert coverage(boxes, 48, 60) == 1.0


def test_the_recipe_round_trips_through_metadata() -> None:
    recipe = AugmentRecipe(jpeg_p=0.7, synthetic_fake_p=0.2)
    assert AugmentRecipe.from_dict(recipe.to_dict()) == recipe
    assert AugmentRecipe.from_dict({**recipe.to_dict(), "jpeg_quality": [50, 90], "unknown": 1}).jpeg_quality == (50, 90)


def test_synthetic_fakes_keep_the_content_and_leave_an_upsampling_trace() -> None:
    import skimage.data  # noqa: PLC0415 - seconds to import

    photo = Image.fromarray(skimage.data.astronaut()).crop((100, 100, 228, 228))
    trace = upsampling_trace(photo, np.random.default_rng(1))
    original, faked = np.asarray(photo, dtype=float), np.asarray(trace, dtype=float)
    assert trace.size == photo.size
    assert np.abs(original - faked).mean() < 12  # the same picture
    # Upsampling leaves less energy in the finest differences between neighbouring pixels.
    assert np.abs(np.diff(faked, axis=1)).mean() < np.abs(np.diff(original, axis=1)).mean()
    crop = augment_crop(photo, 64, np.random.default_rng(2), recipe=AugmentRecipe(), synthetic=True)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
