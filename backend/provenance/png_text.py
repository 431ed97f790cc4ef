"""PNG text chunks (tEXt, zTXt, iTXt) decoded with a bounded inflate: a compressed chunk that would grow past
the cap is stopped after that many bytes, never inflated in full."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

XMP_KEYWORD = "XML:com.adobe.xmp"


class TextTooLarge(Exception):
    pass


class TextUnreadable(Exception):
    pass


@dataclass(frozen=True)
class TextChunk:
    key: str
    text: bytes  # the decoded payload: latin-1 for tEXt/zTXt, UTF-8 for iTXt
    encoding: str


def inflate_bounded(data: bytes, cap: int) -> bytes:
    """zlib-inflate at most ``cap`` bytes; TextTooLarge if the stream holds more, TextUnreadable if broken."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise TextUnreadable(f"broken compressed text: {exc}") from exc
    if len(out) > cap or inflater.unconsumed_tail:
        raise TextTooLarge(f"inflates past {cap} bytes")
    if not inflater.eof:
        raise TextUnreadable("compressed text ends early")
    return out


def keyword(chunk: bytes) -> str:
    """The chunk's keyword (1-79 Latin-1 bytes before a NUL), for naming it even when it is not read."""
    return chunk[: chunk.find(b"\x00", 0, 80)].decode("latin-1") if b"\x00" in chunk[:80] else "?"


def decode_text_chunk(kind: bytes, chunk: bytes, cap: int) -> TextChunk:
    """Decode one text chunk whose decoded payload may be at most ``cap`` bytes."""
    end = chunk.find(b"\x00", 0, 80)
    if end < 1:
        raise TextUnreadable("no keyword")
    key = chunk[:end].decode("latin-1")
    rest = chunk[end + 1 :]
    if kind == b"tEXt":
        return TextChunk(key, rest, "latin-1")
    if kind == b"zTXt":
        if rest[:1] != b"\x00":
            raise TextUnreadable("unknown compression method")
        return TextChunk(key, inflate_bounded(rest[1:], cap), "latin-1")
    # iTXt: compression flag, method, language tag NUL, translated keyword NUL, text.
    if len(rest) < 2:
        raise TextUnreadable("truncated iTXt header")
    compressed, method = rest[0], rest[1]
    parts = rest[2:].split(b"\x00", 2)
    if len(parts) < 3:
        raise TextUnreadable("truncated iTXt header")
    body = parts[2]
    if compressed:
        if method != 0:
            raise TextUnreadable("unknown compression method")
        body = inflate_bounded(body, cap)
    return TextChunk(key, body, "utf-8")
