"""What the detector is not for, said instead of guessed: flat or near-empty images, tiny images, and flat-colour
graphics (screenshots, drawings, charts, rendered text). The model was trained on photographs and photoreal
renders; on these it has no evidence either way, so the policy (core/policy.py) answers ``uncertain`` with the
reason instead of a model verdict.

The rule is three measurements of the decoded pixels, no model:
- the shorter side under ``MIN_SIDE`` pixels: too small to carry a generator's traces;
- the spread of grey levels (standard deviation) under ``FLAT_STD``: a flat fill or an almost empty image;
- the share of pixels inside horizontal runs of at least ``RUN`` (16) pixels of one exact colour over
  ``GRAPHICS_FLAT_SHARE``: areas of one exact colour are what screenshots, charts, drawings and rendered text are
  made of, while a camera's noise (and a generator's) leaves almost no two neighbouring pixels equal, and a photo
  enlarged with nearest-neighbour upscaling repeats pixels only a few times. Measured on the 3,042 valid and test
  images of the shared sets (both classes), 2 exceed 0.6 (a white-background portrait, a render); a quote card
  reads 0.77 after JPEG 90, a bar chart 0.83, a page screenshot more.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MIN_SIDE = 64
FLAT_STD = 2.0
GRAPHICS_FLAT_SHARE = 0.6
RUN = 16
OUT_OF_SCOPE = "out of scope"


def flat_share(pixels: np.ndarray, run: int = RUN) -> float:
    """Share of pixels inside horizontal runs of at least ``run`` pixels of one exact colour (all channels).
    Long runs, not merely equal neighbours: a photo enlarged with nearest-neighbour upscaling repeats each pixel a
    few times but seldom ``run`` times, while backgrounds, bars and page margins run far longer."""
    height, width = pixels.shape[:2]
    if width < run:
        return 0.0
    # equal[y, x]: pixel x equals pixel x + 1 in every channel. Channel by channel on the uint8 pixels, and the runs
    # read from where the equal stretches start and end: a photo has few, so this costs a few passes over the
    # image (a cumulative sum over every pixel cost the worker as much as scoring the image).
    equal = np.zeros((height, width), dtype=bool)  # the last column stays False: no run crosses into the next row
    inner = equal[:, :-1]
    np.equal(pixels[:, 1:, 0], pixels[:, :-1, 0], out=inner)
    for channel in (1, 2):
        inner &= pixels[:, 1:, channel] == pixels[:, :-1, channel]
    flat = equal.ravel().view(np.int8)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a stretch of equal neighbours starts or ends
    if flat[0]:
        edges = np.concatenate(([0], edges))
    pixels_in_run = edges[1::2] - edges[0::2] + 1  # k equal neighbours in a row are k + 1 pixels of one colour
    return float(pixels_in_run[pixels_in_run >= run].sum() / (height * width))


def out_of_scope_reason(pixels: np.ndarray) -> str | None:
    """``"out of scope: ..."`` when the model should not judge this image (RGB uint8, H x W x 3), else None."""
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        return f"{OUT_OF_SCOPE}: too small ({width}x{height} px; at least {MIN_SIDE} px a side is needed)"
    # Both measures on at most 1,024 px a side: a 48 MP photo measured at full size cost the worker 2.5 s.
    small = _thumbnail(pixels)
    # The grey level is the channels' mean; their sum in uint16 has the same spread, three times over (a float
    # copy of every pixel and a mean along the channel axis cost more than the rest of the rule).
    channel_sum = small[..., 0].astype(np.uint16)
    channel_sum += small[..., 1]
    channel_sum += small[..., 2]
    if float(channel_sum.std()) / 3 < FLAT_STD:
        return f"{OUT_OF_SCOPE}: flat or near-empty image"
    if flat_share(small) > GRAPHICS_FLAT_SHARE:
        return f"{OUT_OF_SCOPE}: flat-colour graphics (a screenshot, drawing, chart or rendered text)"
    return None


def _thumbnail(pixels: np.ndarray, most: int = 1024) -> np.ndarray:
    """At most ``most`` pixels a side, by averaging whole blocks (an integer reduce): flat areas stay exactly flat,
    while a photo blown up many times (smooth at native scale) gets its texture back."""
    factor = -(-max(pixels.shape[:2]) // most)
    if factor <= 1:
        return pixels
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).reduce(factor))
