"""The one preprocessing function shared by training, evaluation and serving.

A model's metadata names its preprocessing (``metadata["preprocessing"]``); :func:`prepare` turns decoded RGB
images into the model's input batch according to it. Pixel scaling and residuals live inside the model's own
layers, so this module only decides *which pixels* the model sees:

- ``{"kind": "crops", "crop_size": S, "grid": G, "span": F, "max_grid": M}``: G x G native-resolution S x S crops
  whose centres spread evenly over the central fraction F of each side (1.0, the default: edge to edge); with M, a
  large image gets more crops per side (up to M) so the gaps between crops stay under a third of a crop. No
  downscaling, which would erase generator traces; the model's per-crop logits are pooled, and each crop's own
  score, with its box (:func:`crop_boxes`), is the check's heat map.
- ``{"kind": "resize", "size": S, "interpolation": "nearest"}``: the whole image resized to S x S (the seed CNN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.decoding import LOCAL_FILES, decode_image

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def decode_image_file(path: str | Path) -> Image.Image:
    """Decode a local image file the way uploads are decoded (EXIF orientation applied, RGB), without the API's
    upload caps: a dataset's large photo is trained on, not skipped."""
    return decode_image(Path(path).read_bytes(), LOCAL_FILES)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """An H x W x 3 uint8 array of an image, whatever its mode."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def ensure_min_side(image: Image.Image, size: int) -> Image.Image:
    """Upscale an image whose shorter side is below ``size`` so at least one crop fits."""
    width, height = image.size
    short = min(width, height)
    if short >= size:
        return image
    factor = size / short
    new = (max(size, round(width * factor)), max(size, round(height * factor)))
    return image.resize(new, Image.Resampling.BICUBIC)


def grid_offsets(length: int, crop: int, grid: int, span: float = 1.0) -> list[int]:
    """``grid`` crop offsets along one side whose crop centres spread evenly over the central ``span`` of it
    (1.0: from one edge to the other), kept inside the image and deduplicated for small images."""
    if grid <= 1 or length <= crop:
        return [max(0, (length - crop) // 2)]
    low = max(0.0, length * (1 - span) / 2 - crop / 2)
    high = min(float(length - crop), length * (1 + span) / 2 - crop / 2)
    if high <= low:
        return [max(0, (length - crop) // 2)]
    return sorted({round(low + i * (high - low) / (grid - 1)) for i in range(grid)})


def crops_along(length: int, crop: int, grid: int, max_grid: int | None) -> int:
    """Crops along a side: ``grid``, or with ``max_grid`` as many as keep the gaps between crops under a third
    of a crop (so a large image is still mostly covered, up to ``max_grid``)."""
    if not max_grid:
        return grid
    return int(min(max(grid, math.ceil(length / (crop * 4 / 3))), max_grid))


def _grid(image: Image.Image, crop: int, grid: int, span: float, max_grid: int | None
          ) -> tuple[np.ndarray, list[int], list[int]]:
    array = to_rgb_array(ensure_min_side(image, crop))
    height, width = array.shape[:2]
    tops = grid_offsets(height, crop, crops_along(height, crop, grid, max_grid), span)
    lefts = grid_offsets(width, crop, crops_along(width, crop, grid, max_grid), span)
    return array, tops, lefts


def crop_grid(image: Image.Image, crop: int, grid: int, span: float = 1.0, max_grid: int | None = None
              ) -> np.ndarray:
    """Native-resolution crops of one image: an N x crop x crop x 3 uint8 array, row by row."""
    array, tops, lefts = _grid(image, crop, grid, span, max_grid)
    return np.stack([array[top : top + crop, left : left + crop] for top in tops for left in lefts])


def crop_boxes(image: Image.Image, preprocessing: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """The box ``[x0, y0, x1, y1]`` of each crop :func:`prepare_one` takes, in the image's own pixels (an image
    upscaled to fit one crop maps back to its size), in the same order; the whole image for a resize model."""
    width, height = image.size
    if preprocessing["kind"] != "crops":
        return [(0, 0, width, height)]
    crop = int(preprocessing["crop_size"])
    scale = min(1.0, min(width, height) / crop)  # ensure_min_side's upscaling, undone
    _, tops, lefts = _grid(image, crop, int(preprocessing["grid"]), float(preprocessing.get("span", 1.0)),
                           preprocessing.get("max_grid"))
    return [(round(left * scale), round(top * scale), min(width, round((left + crop) * scale)),
             min(height, round((top + crop) * scale))) for top in tops for left in lefts]


def coverage(boxes: Sequence[tuple[int, int, int, int]], width: int, height: int) -> float:
    """The share of an image's area that at least one box covers."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return float(mask.mean()) if mask.size else 0.0


def resize_whole(image: Image.Image, size: int, interpolation: str = "nearest") -> np.ndarray:
    """The whole image resized to size x size: a 1 x size x size x 3 uint8 array."""
    resized = image.convert("RGB").resize((size, size), _INTERPOLATIONS[interpolation])
    return to_rgb_array(resized)[None]


def prepare_one(image: Image.Image, preprocessing: dict[str, Any]) -> np.ndarray:
    """The model inputs for one image (one or more rows), as uint8."""
    kind = preprocessing["kind"]
    if kind == "crops":
        return crop_grid(image, int(preprocessing["crop_size"]), int(preprocessing["grid"]),
                         float(preprocessing.get("span", 1.0)), preprocessing.get("max_grid"))
    if kind == "resize":
        return resize_whole(image, int(preprocessing["size"]), preprocessing.get("interpolation", "nearest"))
    raise ValueError(f"unknown preprocessing kind {kind!r}")


def prepare(images: Sequence[Image.Image], preprocessing: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """Stack the inputs of several images into one batch; also return how many rows each image got."""
    parts = [prepare_one(image, preprocessing) for image in images]
    counts = [len(part) for part in parts]
    if not parts:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8), counts
    return np.concatenate(parts), counts


def input_size(preprocessing: dict[str, Any]) -> int:
    """Side of one model input, in pixels."""
    return int(preprocessing["crop_size"] if preprocessing["kind"] == "crops" else preprocessing["size"])
