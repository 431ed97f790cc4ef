"""Caps on what the provenance reader parses, passed in by the caller (no settings globals here).

Every number bounds work or memory for one image: hostile metadata is skipped and reported, never followed.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProvenanceLimits:
    # Bigger inputs are refused outright (InputTooLarge); the API's upload cap is the same 20 MiB by default.
    max_input_bytes: int = 20 * MIB
    # One metadata block (an XMP packet, an EXIF block, a PNG text chunk after inflating). Pillow's
    # PngImagePlugin.MAX_TEXT_CHUNK is the same 1 MiB, but it is a process-wide global and it fails the
    # whole image open; here the block is skipped and recorded instead.
    max_block_bytes: int = 1 * MIB
    # All metadata blocks of one file together (Pillow's MAX_TEXT_MEMORY is 64 MiB: far more than any
    # generator writes).
    max_total_bytes: int = 8 * MIB
    # Metadata blocks read (text chunks, APP segments, RIFF chunks that carry metadata).
    max_blocks: int = 256
    # Chunks or segments walked past, image data included: a PNG can be cut into many small IDAT chunks.
    max_container_entries: int = 100_000
    # XML elements in one XMP packet, counted before parsing so an element flood is never built.
    max_xmp_elements: int = 20_000
    # Text fields handed to the signature table, and how much of each value a pattern sees.
    max_fields: int = 2_000
    max_match_chars: int = 64 * 1024
    # The manifest store JSON c2pa-python returns, and how many manifests (active + ingredients) are walked.
    max_manifest_json_bytes: int = 4 * MIB
    max_manifests: int = 32
    # Signals kept per image (the list is stored with every image and returned in every check).
    max_signals: int = 64


class Budget:
    """Counts metadata blocks and bytes taken from one file against its limits."""

    def __init__(self, limits: ProvenanceLimits) -> None:
        self.limits = limits
        self.blocks = 0
        self.bytes = 0

    def refusal(self, size: int) -> str | None:
        """Why one more block of ``size`` bytes does not fit ("block" or "file"); None, and taken, if it does."""
        if size > self.limits.max_block_bytes:
            return "block"
        if self.blocks + 1 > self.limits.max_blocks or self.bytes + size > self.limits.max_total_bytes:
            return "file"
        self.blocks += 1
        self.bytes += size
        return None

    def allows(self, size: int) -> bool:
        return self.refusal(size) is None

    def spend(self, size: int) -> None:
        """Charge a block that was refused after work was done on it (a bomb inflated up to the cap, a chunk
        that failed to decode), so many of them cannot add up to unbounded work."""
        self.blocks += 1
        self.bytes += size

    def room_for_block(self) -> int:
        """The most bytes the next block may inflate to (so a bomb is stopped at this many)."""
        return max(0, min(self.limits.max_block_bytes, self.limits.max_total_bytes - self.bytes))
