"""The heat map on the Image page: the detector's per-crop scores (a check's ``regions``) painted over the image.

Each pixel takes the mean score of the crops that cover it, from blue (the crops there look real) to red (they
look fake), half transparent; pixels no crop covers stay as they are. It shows where the detector's evidence
came from, crop by crop; it is not a segmentation of manipulated pixels (a crop scores high as a whole)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

ALPHA = 0.45


def region_means(regions: list[dict[str, Any]], width: int, height: int) -> np.ndarray:
    """Per pixel, the mean score of the regions covering it; NaN where none does."""
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for region in regions:
        x0, y0, x1, y1 = (int(v) for v in region["box"])
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            total[y0:y1, x0:x1] += float(region["score"])
            count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def heatmap_overlay(picture: Image.Image, regions: list[dict[str, Any]]) -> Image.Image:
    """The picture with the regions' scores blended over it (RGB, same size)."""
    base = np.asarray(picture.convert("RGB"), dtype=np.float64)
    means = region_means(regions, picture.width, picture.height)
    covered = ~np.isnan(means)
    score = np.nan_to_num(means)
    colour = np.stack([255 * score, 40 * np.ones_like(score), 255 * (1 - score)], axis=-1)
    blended = np.where(covered[..., None], (1 - ALPHA) * base + ALPHA * colour, base)
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def heatmap_png(picture: Image.Image, regions: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    heatmap_overlay(picture, regions).save(buffer, "PNG")
    return buffer.getvalue()
