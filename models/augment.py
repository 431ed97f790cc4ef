"""Training-time augmentation for crop models: what web images go through (resizing, blur, recompression,
greyscale, colour shifts), applied to BOTH classes with the same probabilities so none of it can separate them.
In particular greyscale and sepia on both classes remove the "greyscale means real" (faces-stylegan2) and "sepia
means fake" (sd_classimages_fakeonly) shortcuts, random recompression hides which class was JPEG-compressed twice
(the reals of diffusion_trio_vs_imagenet), and colour jitter blunts "muted colours mean fake" (realorai_alkemist).

Optionally a share of the real crops becomes *synthetic fakes* made from those same pixels (:func:`upsampling_trace`):
the two classes then share content exactly and differ only in the trace generator upsampling leaves, the idea of
AutoGAN (Zhang et al. 2019) and B-Free (CVPR 2025) without a learned generator.

The final crop is the same native-resolution crop serving takes (``ensure_min_side`` + a crop), just at a
random position instead of the grid."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from models.preprocessing import ensure_min_side, to_rgb_array

_RESAMPLERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BOX)
_UPSAMPLERS = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
# A sepia tone as a 3x4 colour matrix for Image.convert("RGB", matrix).
_SEPIA = (0.393, 0.769, 0.189, 0, 0.349, 0.686, 0.168, 0, 0.272, 0.534, 0.131, 0)


@dataclass(frozen=True)
class AugmentRecipe:
    """Probabilities and ranges of each augmentation. The defaults are the shipped model's recipe; the values
    are written to a model's metadata so a run can be reproduced."""

    downscale_p: float = 0.35  # a re-shared copy: downscaled by a factor in downscale_range
    downscale_range: tuple[float, float] = (0.5, 1.0)
    upscale_p: float = 0.0  # upscaling reals would teach "interpolated means real", the opposite of the trace
    tone_p: float = 0.2  # greyscale (two thirds) or sepia (one third)
    colour_p: float = 0.3  # brightness, contrast and saturation by 0.75-1.25
    # Blur, sharpening and noise on both classes: overall sharpness must not tell the classes apart (it points
    # different ways in different collections).
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    sharpen_p: float = 0.15  # unsharp masking, 30-150%
    noise_p: float = 0.15  # Gaussian noise of noise_sigma grey levels
    noise_sigma: tuple[float, float] = (1.0, 3.0)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    jpeg_low_p: float = 0.1  # a harsher recompression, quality 30-60
    synthetic_fake_p: float = 0.0  # share of real crops turned into synthetic fakes (see upsampling_trace)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentRecipe:
        known: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                                 for key, value in values.items() if key in cls.__dataclass_fields__}
        return cls(**known)


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


def upsampling_trace(region: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The region's half-size copy upsampled back by 2 with a random interpolator, then lightly sharpened or
    smoothed: the correlation between neighbouring pixels that a generator's upsampling layers leave, on pixels
    whose content is exactly the real image's."""
    width, height = region.size
    half = region.resize((max(1, width // 2), max(1, height // 2)), _RESAMPLERS[int(rng.integers(len(_RESAMPLERS)))])
    up = half.resize((width, height), _UPSAMPLERS[int(rng.integers(len(_UPSAMPLERS)))])
    if rng.random() < 0.5:
        up = up.filter(ImageFilter.UnsharpMask(radius=1, percent=int(rng.integers(40, 120)), threshold=0))
    return up


def _tone(region: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 2 / 3:
        return region.convert("L").convert("RGB")
    return region.convert("RGB", _SEPIA)


def _colour(region: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        region = enhancer(region).enhance(float(rng.uniform(0.75, 1.25)))
    return region


def _noise(region: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(region, dtype=np.float32) + rng.normal(0.0, sigma, (region.height, region.width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def augment_crop(
    image: Image.Image,
    crop: int,
    rng: np.random.Generator,
    span: float = 1.0,
    recipe: AugmentRecipe | None = None,
    synthetic: bool = False,
) -> np.ndarray:
    """One augmented crop x crop x 3 uint8 training crop from a decoded RGB image, centred in the central
    ``span`` of it (where serving takes its crops). ``synthetic``: turn the window into a synthetic fake first."""
    recipe = recipe or AugmentRecipe()
    scale = 1.0
    if rng.random() < recipe.downscale_p:
        scale = float(rng.uniform(*recipe.downscale_range))
    elif rng.random() < recipe.upscale_p:
        scale = float(rng.uniform(1.0, 1.5))
    # A window a bit larger than the crop, so the JPEG grid and the final crop position both vary.
    region = _random_window(image, math.ceil((crop + 16) / scale), rng, span)
    if synthetic:
        region = upsampling_trace(region, rng)
    if scale != 1.0:
        size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
        region = region.resize(size, _RESAMPLERS[int(rng.integers(len(_RESAMPLERS)))])
    if rng.random() < recipe.tone_p:
        region = _tone(region, rng)
    if rng.random() < recipe.colour_p:
        region = _colour(region, rng)
    if rng.random() < recipe.blur_p:
        region = region.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(*recipe.blur_sigma))))
    elif rng.random() < recipe.sharpen_p:
        region = region.filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(0.5, 2.0)),
                                                       percent=int(rng.integers(30, 151)), threshold=0))
    if rng.random() < recipe.noise_p:
        region = _noise(region, float(rng.uniform(*recipe.noise_sigma)), rng)
    if rng.random() < recipe.jpeg_p:
        region = reencode_jpeg(region, int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1)))
    elif rng.random() < recipe.jpeg_low_p:
        region = reencode_jpeg(region, int(rng.integers(30, 61)))
    if rng.random() < 0.5:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    region = ensure_min_side(region, crop)
    return to_rgb_array(_random_window(region, crop, rng))
