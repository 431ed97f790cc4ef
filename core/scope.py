"""What the detector is not for, said instead of guessed: flat or near-empty images, tiny images, and flat-colour
graphics (screenshots, drawings, charts, rendered text). The model was trained on photographs and photoreal
renders; on these it has no evidence either way, so the policy (core/policy.py) answers ``uncertain`` with the
reason instead of a model verdict.

The rule is three measurements of the decoded pixels, no model:
- the shorter side under ``MIN_SIDE`` pixels: too small to carry a generator's traces;
- the spread of grey levels (standard deviation) under ``FLAT_STD``: a flat fill or an almost empty image;
- the share of pixels identical to both their right and lower neighbours over ``GRAPHICS_FLAT_SHARE``: areas of
  one exact colour are what screenshots, charts, drawings and rendered text are made of, while a camera's noise
  (and a generator's) leaves almost no two neighbouring pixels equal. Measured on the 3,042 valid and test images
  of the shared sets (both classes), 4 exceed 0.6 (white-background portraits and renders, blown-out skies);
  rendered text, charts and page screenshots sit near 0.9, also after JPEG.
"""

from __future__ import annotations

import numpy as np

MIN_SIDE = 64
FLAT_STD = 2.0
GRAPHICS_FLAT_SHARE = 0.6
OUT_OF_SCOPE = "out of scope"


def flat_share(pixels: np.ndarray) -> float:
    """Share of pixels equal (all channels) to their right and lower neighbours."""
    rgb = pixels[..., :3].astype(np.int16)
    core = rgb[:-1, :-1]
    same = np.all(core == rgb[:-1, 1:], axis=-1) & np.all(core == rgb[1:, :-1], axis=-1)
    return float(same.mean()) if same.size else 0.0


def out_of_scope_reason(pixels: np.ndarray) -> str | None:
    """``"out of scope: ..."`` when the model should not judge this image (RGB uint8, H x W x 3), else None."""
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        return f"{OUT_OF_SCOPE}: too small ({width}x{height} px; at least {MIN_SIDE} px a side is needed)"
    grey = pixels[..., :3].astype(np.float32).mean(axis=-1)
    if float(grey.std()) < FLAT_STD:
        return f"{OUT_OF_SCOPE}: flat or near-empty image"
    if flat_share(_thumbnail(pixels)) > GRAPHICS_FLAT_SHARE:
        return f"{OUT_OF_SCOPE}: flat-colour graphics (a screenshot, drawing, chart or rendered text)"
    return None


def _thumbnail(pixels: np.ndarray, most: int = 1024) -> np.ndarray:
    """A window of at most ``most`` pixels a side from the centre (native pixels: no resampling, which would
    smooth a photo's noise into equal neighbours or break a graphic's flat areas)."""
    height, width = pixels.shape[:2]
    top, left = max(0, (height - most) // 2), max(0, (width - most) // 2)
    return pixels[top:top + most, left:left + most]
