"""PDQ perceptual hashes of decoded images: the 256-bit hash Meta's Hasher-Matcher-Actioner (HMA) and ThreatExchange
share, its quality, its hex form, and the Hamming distance between two of them.

Two images whose hashes differ in at most 31 of 256 bits are near-copies in PDQ's own terms (a resize, a
re-encoding, a screenshot); `backend.matching.index` finds them among many.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pdqhash
from PIL import Image

HASH_BITS = 256
HASH_BYTES = HASH_BITS // 8
HEX_LENGTH = HASH_BITS // 4
# PDQ's own threshold for "same image" (HMA's PDQ_CONFIDENT_MATCH_THRESHOLD).
MATCH_DISTANCE = 31
# HMA drops hashes under quality 50: below it the image is too flat (a blank frame, a smooth gradient) for its
# hash to tell it apart from other flat images.
MIN_QUALITY = 50
# Below about 24 px a hash stops following its image, yet PDQ upsamples the thumbnail to its 64x64 working size and
# still rates it near 100: shrunk to 16 px, 32% of 500 test images stayed within 31 of their original, none at
# 12 px (benchmarks/matching.py, tiny copies; at 24 to 64 px all did). A size floor stands in for PDQ's quality there.
MIN_SIDE = 32
# PDQ's filters run over every pixel (650 ms for a 3000x2000 photo), so a large photo is first averaged down by a
# whole factor that keeps its shorter side at 512 px or more. Whole blocks averaged are what PDQ's own box filters
# do, so the hash moves little: over the 30 photos of the shared data whose shorter side is 1024 px or more, a median
# of 6 bits and at most 14 from hashing them whole as ThreatExchange's Python hasher does, in a quarter of the time
# (resizing to 512x512, as its C++ tool does, moved them 10 bits at the median, up to 16).
WORKING_SIDE = 512

_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PdqHash:
    """A PDQ hash as 64 lowercase hex digits (ThreatExchange's spelling: the first bit is the highest of the first
    digit), with its quality from 0 to 100; None when unknown, as for a hash read from a shared list."""

    hex: str
    quality: int | None

    def __post_init__(self) -> None:
        if not is_pdq_hex(self.hex):
            raise ValueError(f"not a PDQ hash: {self.hex!r} (want {HEX_LENGTH} lowercase hex digits)")

    def is_matchable(self, min_quality: int = MIN_QUALITY) -> bool:
        """Whether this hash may be stored or looked up; an unknown quality is trusted as its sharer's decision."""
        return self.quality is None or self.quality >= min_quality


def hash_image(image: Image.Image, *, min_side: int = MIN_SIDE) -> PdqHash:
    """The PDQ hash of a decoded, upright image (intake's ``decode_image`` gives one). An image whose shorter side
    is under ``min_side`` gets quality 0 (never matched): see MIN_SIDE."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    factor = min(rgb.width, rgb.height) // WORKING_SIDE
    if factor >= 2:
        rgb = rgb.reduce(factor)
    bits, quality = pdqhash.compute(np.asarray(rgb))
    if min(image.width, image.height) < min_side:
        quality = 0
    return PdqHash(bits_to_hex(bits), int(quality))


def bits_to_hex(bits: np.ndarray) -> str:
    """256 zeros and ones, first bit first, as 64 hex digits."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def is_pdq_hex(text: str) -> bool:
    return len(text) == HEX_LENGTH and _HEX.fullmatch(text) is not None


def normalize_hex(text: str) -> str:
    """A hash as written by people and other tools (either case, spaces around) in the one spelling stored.
    Raises ValueError for anything but 64 hex digits."""
    normalized = text.strip().lower()
    if not is_pdq_hex(normalized):
        raise ValueError(f"not a PDQ hash: {text!r} (want {HEX_LENGTH} hex digits)")
    return normalized


def hex_to_bytes(pdq_hex: str) -> bytes:
    """The 32 bytes of a hash, for binary indexes."""
    return bytes.fromhex(normalize_hex(pdq_hex))


def hamming_distance(a: str, b: str) -> int:
    """How many of the 256 bits differ between two hashes in hex."""
    return (int.from_bytes(hex_to_bytes(a), "big") ^ int.from_bytes(hex_to_bytes(b), "big")).bit_count()


@dataclass(frozen=True)
class CopyRule:
    """When two images are near-copies: PDQ hashes at most ``distance`` bits apart, both of ``min_quality`` or
    more (``Settings.match_distance`` and ``match_min_quality``); ``None`` where a caller wants no copies."""

    distance: int = MATCH_DISTANCE
    min_quality: int = MIN_QUALITY


DEFAULT_COPY_RULE = CopyRule()
