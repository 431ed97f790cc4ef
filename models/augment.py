"""Training-time augmentation for crop models: what web images go through (resizing, blur, recompression,
greyscale), applied to BOTH classes with the same probabilities so none of it can separate them. In particular
greyscale on both classes removes the faces-stylegan2 shortcut (only its real photos are greyscale).

The final crop is the same native-resolution crop serving takes (``ensure_min_side`` + a crop), just at a
random position instead of the grid."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

from models.preprocessing import ensure_min_side, to_rgb_array

_RESAMPLERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BOX)


def _random_offset(length: int, window: int, span: float, rng: np.random.Generator) -> int:
    """A window offset whose centre falls in the central ``span`` of the side (1.0: anywhere), inside the image."""
    low = max(window / 2, length * (1 - span) / 2)
    high = min(length - window / 2, length * (1 + span) / 2)
    centre = rng.uniform(low, high) if high > low else length / 2
    return int(np.clip(round(centre - window / 2), 0, length - window))


def _random_window(image: Image.Image, side: int, rng: np.random.Generator, span: float = 1.0) -> Image.Image:
    width, height = image.size
    win_w, win_h = min(side, width), min(side, height)
    left, top = _random_offset(width, win_w, span, rng), _random_offset(height, win_h, span, rng)
    return image.crop((left, top, left + win_w, top + win_h))


def reencode_jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The image as a JPEG of this quality would show it."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def augment_crop(image: Image.Image, crop: int, rng: np.random.Generator, span: float = 1.0) -> np.ndarray:
    """One augmented crop x crop x 3 uint8 training crop from a decoded RGB image, centred in the central
    ``span`` of it (where serving takes its crops)."""
    scale = float(2 ** rng.uniform(-1, 1)) if rng.random() < 0.2 else 1.0
    # A window a bit larger than the crop, so the JPEG grid and the final crop position both vary.
    region = _random_window(image, math.ceil((crop + 16) / scale), rng, span)
    if scale != 1.0:
        size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
        region = region.resize(size, _RESAMPLERS[int(rng.integers(len(_RESAMPLERS)))])
    if rng.random() < 0.2:
        region = region.convert("L").convert("RGB")
    if rng.random() < 0.1:
        region = region.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 1.5))))
    if rng.random() < 0.3:
        region = reencode_jpeg(region, int(rng.integers(30, 101)))
    if rng.random() < 0.5:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    region = ensure_min_side(region, crop)
    return to_rgb_array(_random_window(region, crop, rng))
