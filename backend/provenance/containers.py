"""Bounded walks over JPEG segments, PNG chunks and WebP (RIFF) chunks that collect the metadata blocks:
EXIF, XMP and text. Every length is checked against what is left of the file, every block against the
budget; what is skipped becomes a signal. Other formats get a bounded scan for an XMP packet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from backend.provenance.evidence import Signal
from backend.provenance.limits import Budget
from backend.provenance.png_text import XMP_KEYWORD, TextTooLarge, TextUnreadable, decode_text_chunk, keyword

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
EXTENDED_XMP_NAMESPACE = b"http://ns.adobe.com/xmp/extension/\x00"
EXIF_HEADER = b"Exif\x00\x00"
PNG_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")
# JPEG markers without a length: TEM, RST0-7.
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class Block:
    kind: Literal["exif", "xmp", "text"]
    source: str  # "jpeg", "png tEXt 'parameters'", ...
    data: bytes
    key: str = ""  # a text block's keyword
    encoding: str = "latin-1"


@dataclass
class Walk:
    blocks: list[Block] = field(default_factory=list)
    problems: list[Signal] = field(default_factory=list)
    file_budget_spent: bool = False  # reported once, not once per block after it

    def too_large(self, detail: str, source: str) -> None:
        self.problems.append(Signal("too_large", None, detail, source))

    def unreadable(self, detail: str, source: str) -> None:
        self.problems.append(Signal("unreadable", None, detail, source))

    def take(self, budget: Budget, block: Block, what: str) -> None:
        refusal = budget.refusal(len(block.data))
        if refusal is None:
            self.blocks.append(block)
        elif refusal == "block":
            self.too_large(f"metadata too large: {what} ({len(block.data)} bytes) is over the cap; skipped",
                           block.source)
        else:
            self.budget_spent(budget, what, block.source)

    def budget_spent(self, budget: Budget, what: str, source: str) -> None:
        if not self.file_budget_spent:
            self.file_budget_spent = True
            limits = budget.limits
            self.too_large(f"metadata too large: more than {limits.max_blocks} blocks or {limits.max_total_bytes} "
                           f"bytes of metadata in one file; {what} and the rest skipped", source)

    def oversize(self, budget: Budget, length: int, what: str, source: str) -> bool:
        """Checked before a block is sliced out of the file, so an oversized one is never copied."""
        if length <= budget.limits.max_block_bytes:
            return False
        self.too_large(f"metadata too large: {what} of {length} bytes; skipped", source)
        return True


HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def sniff(data: bytes) -> str | None:
    """The container, from magic numbers: JPEG, PNG, WEBP, GIF, TIFF, HEIF, AVIF, MP4, MOV or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in HEIF_BRANDS:
            return "HEIF"
        return "MOV" if brand == b"qt  " else "MP4"  # a video: c2pa reads its manifest as it does a photo's
    return None


def walk(data: bytes, container: str | None, budget: Budget) -> Walk:
    if container == "JPEG":
        return _walk_jpeg(data, budget)
    if container == "PNG":
        return _walk_png(data, budget)
    if container == "WEBP":
        return _walk_webp(data, budget)
    if container is not None:
        return _scan_xmp(data, container.lower(), budget)
    return Walk()


def _entries_exceeded(result: Walk, count: int, budget: Budget, what: str, source: str) -> bool:
    if count <= budget.limits.max_container_entries:
        return False
    result.too_large(f"more than {budget.limits.max_container_entries} {what}; the rest were not read", source)
    return True


def _walk_jpeg(data: bytes, budget: Budget) -> Walk:
    result = Walk()
    extended: dict[bytes, bytearray] = {}
    pos, count = 2, 0
    # Metadata segments come before the first scan (SOS); what follows is image data.
    while pos + 4 <= len(data):
        count += 1
        if _entries_exceeded(result, count, budget, "JPEG segments", "jpeg"):
            break
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            if marker in (0xE1, 0xFE):
                result.unreadable("truncated JPEG metadata segment; skipped", "jpeg")
            break
        payload = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1:
            _jpeg_app1(result, payload, extended, budget)
        elif marker == 0xFE:
            result.take(budget, Block("text", "jpeg COM", payload, key="COM", encoding="utf-8"), "JPEG comment")
        pos += 2 + length
    for buffer in extended.values():
        if buffer:  # an empty one was refused above
            result.blocks.append(Block("xmp", "jpeg extended", bytes(buffer)))
    return result


def _jpeg_app1(result: Walk, payload: bytes, extended: dict[bytes, bytearray], budget: Budget) -> None:
    if payload.startswith(EXIF_HEADER):
        result.take(budget, Block("exif", "jpeg", payload), "EXIF")
    elif payload.startswith(XMP_NAMESPACE):
        result.take(budget, Block("xmp", "jpeg", payload[len(XMP_NAMESPACE) :]), "XMP")
    elif payload.startswith(EXTENDED_XMP_NAMESPACE):
        # Extended XMP: GUID (32), full length (4), offset (4), then this part; parts are put back together.
        head = payload[len(EXTENDED_XMP_NAMESPACE) :]
        guid, total = head[:32], int.from_bytes(head[32:36], "big")
        offset, part = int.from_bytes(head[36:40], "big"), head[40:]
        if guid not in extended:
            if len(extended) >= 4 or not budget.allows(total):
                result.too_large(f"metadata too large: extended XMP of {total} bytes; skipped", "jpeg xmp")
                extended[guid] = bytearray()  # remembered, so its other parts are skipped quietly
                return
            extended[guid] = bytearray(total)
        buffer = extended[guid]
        if buffer and offset + len(part) <= len(buffer):
            buffer[offset : offset + len(part)] = part


def _walk_png(data: bytes, budget: Budget) -> Walk:
    result = Walk()
    pos, count = 8, 0
    while pos + 8 <= len(data):
        count += 1
        if _entries_exceeded(result, count, budget, "PNG chunks", "png"):
            break
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            if kind in PNG_TEXT_TYPES or kind == b"eXIf":
                result.unreadable(f"truncated PNG {kind.decode('latin-1')} chunk; skipped", "png")
            break
        if kind in PNG_TEXT_TYPES:
            if not result.oversize(budget, length, f"PNG {kind.decode('latin-1')} chunk",
                                   f"png {kind.decode('latin-1')} '{keyword(data[start : start + 80])}'"):
                _png_text(result, kind, data[start:end], budget)
        elif kind == b"eXIf":
            if not result.oversize(budget, length, "PNG eXIf chunk", "png exif"):
                result.take(budget, Block("exif", "png", data[start:end]), "EXIF")
        elif kind == b"IEND":
            break
        pos = end + 4  # past the CRC
    return result


def _png_text(result: Walk, kind: bytes, chunk: bytes, budget: Budget) -> None:
    name = kind.decode("latin-1")
    source = f"png {name} '{keyword(chunk)}'"
    room = budget.room_for_block()
    if room == 0 or budget.blocks >= budget.limits.max_blocks:
        result.budget_spent(budget, f"PNG {name} chunk", source)
        return
    try:
        text = decode_text_chunk(kind, chunk, room)
    except TextTooLarge:
        budget.spend(room)
        result.too_large(f"metadata too large: PNG {name} chunk inflates past {room} bytes; skipped", source)
        return
    except TextUnreadable as exc:
        budget.spend(len(chunk))
        result.unreadable(f"unreadable PNG {name} chunk ({exc}); skipped", source)
        return
    if text.key == XMP_KEYWORD:
        result.take(budget, Block("xmp", "png", text.text), "XMP")
    else:
        result.take(budget, Block("text", source, text.text, key=text.key, encoding=text.encoding),
                    f"PNG {name} chunk")


def _walk_webp(data: bytes, budget: Budget) -> Walk:
    result = Walk()
    pos, count = 12, 0
    while pos + 8 <= len(data):
        count += 1
        if _entries_exceeded(result, count, budget, "WebP chunks", "webp"):
            break
        fourcc = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        start, end = pos + 8, pos + 8 + length
        if end > len(data):
            if fourcc in (b"EXIF", b"XMP "):
                result.unreadable(f"truncated WebP {fourcc.decode('latin-1').strip()} chunk; skipped", "webp")
            break
        name = fourcc.decode("latin-1").strip()
        if fourcc in (b"EXIF", b"XMP ") and not result.oversize(budget, length, f"WebP {name} chunk", "webp"):
            kind: Literal["exif", "xmp"] = "exif" if fourcc == b"EXIF" else "xmp"
            result.take(budget, Block(kind, "webp", data[start:end]), kind.upper())
        pos = end + (length & 1)  # chunks are padded to an even size
    return result


def _scan_xmp(data: bytes, where: str, budget: Budget) -> Walk:
    """GIF, TIFF, HEIF, AVIF: find the XMP packet by its wrapper instead of walking the container."""
    result = Walk()
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return result
    cap = budget.limits.max_block_bytes
    end = data.find(b"</x:xmpmeta>", start, start + cap)
    if end < 0:
        result.unreadable(f"XMP packet with no end within {cap} bytes; skipped", f"{where} xmp")
        return result
    result.take(budget, Block("xmp", where, data[start : end + len(b"</x:xmpmeta>")]), "XMP")
    return result
