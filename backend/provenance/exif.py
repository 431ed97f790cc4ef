"""The few EXIF tags that name a tool or carry generation settings, read from a TIFF-structured block with
every count and offset checked against the block.

Written here rather than with Pillow's Image.Exif: Pillow reports corrupt EXIF through process-wide warnings
(not thread-safe to catch), and six tags need no more than this.
"""

from __future__ import annotations

from backend.provenance.evidence import Signal
from backend.provenance.fields import MetadataField, Role

IFD0_TAGS: dict[int, tuple[str, Role]] = {
    0x010E: ("ImageDescription", "caption"),
    0x010F: ("Make", "tool"),
    0x0110: ("Model", "tool"),
    0x0131: ("Software", "tool"),
    0x013B: ("Artist", "caption"),
    0x9C9C: ("XPComment", "caption"),  # Windows, UTF-16LE
}
EXIF_IFD_TAGS: dict[int, tuple[str, Role]] = {
    0x9286: ("UserComment", "params"),  # where A1111 writes its parameters in JPEG and WebP files
}
EXIF_IFD_POINTER = 0x8769
BYTE_TYPES = frozenset({1, 2, 7})  # BYTE, ASCII, UNDEFINED: one byte per count
MAX_ENTRIES = 1024  # per IFD; real files have tens


class _Corrupt(Exception):
    pass


def read_exif(block: bytes, where: str) -> tuple[list[MetadataField], list[Signal]]:
    """Fields from an EXIF block (with or without the "Exif\\0\\0" prefix); a signal if it is corrupt."""
    data = block[6:] if block.startswith(b"Exif\x00\x00") else block
    try:
        order = _byte_order(data)
        fields = _read_ifd(data, _u32(data, 4, order), order, IFD0_TAGS, where)
        pointer = _pointer(data, _u32(data, 4, order), order)
        if pointer is not None:
            fields += _read_ifd(data, pointer, order, EXIF_IFD_TAGS, where)
    except _Corrupt as exc:
        return [], [Signal("unreadable", None, f"unreadable EXIF ({exc}); skipped", f"{where} exif")]
    return fields, []


def _byte_order(data: bytes) -> str:
    if data[:4] == b"II*\x00":
        return "little"
    if data[:4] == b"MM\x00*":
        return "big"
    raise _Corrupt("no TIFF header")


def _u16(data: bytes, at: int, order: str) -> int:
    if at < 0 or at + 2 > len(data):
        raise _Corrupt("offset outside the block")
    return int.from_bytes(data[at : at + 2], order)  # type: ignore[arg-type]


def _u32(data: bytes, at: int, order: str) -> int:
    if at < 0 or at + 4 > len(data):
        raise _Corrupt("offset outside the block")
    return int.from_bytes(data[at : at + 4], order)  # type: ignore[arg-type]


def _entries(data: bytes, ifd: int, order: str) -> range:
    count = _u16(data, ifd, order)
    if count > MAX_ENTRIES or ifd + 2 + 12 * count > len(data):
        raise _Corrupt(f"IFD of {count} entries runs past the block")
    return range(ifd + 2, ifd + 2 + 12 * count, 12)


def _pointer(data: bytes, ifd: int, order: str) -> int | None:
    for entry in _entries(data, ifd, order):
        if _u16(data, entry, order) == EXIF_IFD_POINTER:
            pointer = _u32(data, entry + 8, order)
            return pointer if pointer != ifd else None  # an IFD pointing at itself is a loop, not a sub-IFD
    return None


def _read_ifd(data: bytes, ifd: int, order: str, tags: dict[int, tuple[str, Role]], where: str
              ) -> list[MetadataField]:
    fields = []
    for entry in _entries(data, ifd, order):
        tag = _u16(data, entry, order)
        if tag not in tags or _u16(data, entry + 2, order) not in BYTE_TYPES:
            continue
        count = _u32(data, entry + 4, order)
        start = entry + 8 if count <= 4 else _u32(data, entry + 8, order)
        if start + count > len(data):
            raise _Corrupt(f"tag {tag:#06x} runs past the block")
        name, role = tags[tag]
        value = _decode(name, data[start : start + count], order)
        if value:
            fields.append(MetadataField(f"{where} exif {name}", name, value, role))
    return fields


def _decode(name: str, raw: bytes, order: str) -> str:
    if name == "XPComment":
        return raw.decode("utf-16-le", "replace").strip("\x00 \n")
    if name == "UserComment":
        return _user_comment(raw, order)
    return _text(raw.split(b"\x00", 1)[0])


def _text(raw: bytes) -> str:
    """EXIF ASCII is meant to be 7-bit; in practice it is UTF-8, or Latin-1 from older tools."""
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def _user_comment(raw: bytes, order: str) -> str:
    """UserComment starts with an 8-byte character code; "UNICODE" text is UTF-16 in either byte order in
    practice (piexif, which A1111 uses, writes big-endian whatever the file's order)."""
    code, text = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        even_zeros = text[0::2].count(0)
        odd_zeros = text[1::2].count(0)
        encoding = "utf-16-be" if even_zeros > odd_zeros else "utf-16-le" if odd_zeros > even_zeros \
            else ("utf-16-le" if order == "little" else "utf-16-be")
        return text[: len(text) // 2 * 2].decode(encoding, "replace").strip("\x00 \n")
    return _text(text.split(b"\x00", 1)[0])
