"""Decoding untrusted image bytes: the checks every upload, fetched URL, stored image and local file goes through.

The caller states the caps (``ImageLimits``): the API and the workers pass the configured upload caps
(``Settings.image_limits``), while training, evaluation and ``fakewatch score`` read a person's own files under
``LOCAL_FILES`` (Pillow's own decompression-bomb guard only), so a large photo in a dataset is never skipped for
being larger than an upload may be.

Order matters: the byte cap first (cheap), then the format is sniffed from the header with only the
allow-listed Pillow plugins (so TIFF, PDF, SVG... never reach a parser), then the pixel cap is decided from
the header (so a decompression bomb is refused before a single pixel is decoded), and only then is the first
frame fully decoded (so truncated and corrupt files are refused here, not in a worker).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageOps

from core.errors import FakewatchError

# HEIC comes through pillow-heif; AVIF through Pillow's own plugin (this libheif build has no AV1 decoder).
pillow_heif.register_heif_opener()

# Pillow plugin names tried, in this order. AVIF before HEIF: Pillow's AVIF plugin declines HEIC files
# (both can carry the "mif1" brand) and Pillow then moves on to the next plugin.
ALLOWED_PLUGINS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "AVIF", "HEIF")
# A multi-picture JPEG from a phone camera opens as "MPO": to a person it is a JPEG.
FORMAT_NAMES = {"MPO": "JPEG"}
EXIF_ORIENTATION = 0x0112
# Orientations 5 to 8 rotate by a quarter turn, so width and height swap.
SIDEWAYS_ORIENTATIONS = frozenset({5, 6, 7, 8})
ALLOWED_LIST = "JPEG, PNG, WebP, GIF, BMP, HEIC or AVIF"

# Magic numbers, only to tell "a broken image of an allowed kind" (invalid_image) from "not an allowed kind"
# (unsupported_format), and to name the refused kind in the message.
ALLOWED_MAGIC = (
    (b"\xff\xd8\xff", 0),
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"BM", 0),
    (b"WEBP", 8),
    (b"ftyp", 4),
)
REFUSED_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML document (SVG?)"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"8BPS", "a Photoshop document"),
    (b"PK\x03\x04", "a ZIP archive"),
)


@dataclass(frozen=True)
class ImageLimits:
    """The caps bytes are decoded under; None means no cap of ours (Pillow's own bomb guard still applies)."""

    max_bytes: int | None
    max_pixels: int | None


# A person's own files (datasets, `fakewatch score`): trusted not to be attacks, so only Pillow's guard applies.
LOCAL_FILES = ImageLimits(max_bytes=None, max_pixels=None)


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    byte_size: int
    format: str  # "JPEG", "PNG", "WEBP", "GIF", "BMP", "HEIF", "AVIF"
    width: int  # after EXIF orientation
    height: int


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check untrusted bytes and describe them; raises FakewatchError with a stable code when refused."""
    image, fmt = _open_checked(data, limits)
    with image:
        width, height = image.size
        if _orientation(image) in SIDEWAYS_ORIENTATIONS:
            width, height = height, width
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        byte_size=len(data),
        format=fmt,
        width=width,
        height=height,
    )


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """The same checks as inspect_image, then the image as RGB (EXIF orientation applied, first frame)."""
    image, _ = _open_checked(data, limits)
    with image:
        return _to_rgb(_upright(image), fresh=True)


# Decoded pixels kept beside a description only up to this size (12 MB of RGB): a chunk of large photos would
# otherwise hold hundreds of MB until it is scored; a larger image is decoded again where it is needed.
KEEP_PIXELS_UP_TO = 4_000_000


@dataclass(frozen=True)
class Decoded:
    """Untrusted bytes checked and decoded once: what ``inspect_image`` says of them and their RGB pixels (None
    above ``KEEP_PIXELS_UP_TO`` pixels), so intake's hash, provenance and the model all use the same decode."""

    info: ImageInfo
    pixels: Image.Image | None


def decode_checked(data: bytes, limits: ImageLimits) -> Decoded:
    """``inspect_image`` and ``decode_image`` in one decode."""
    image, fmt = _open_checked(data, limits)
    with image:
        upright = _upright(image)
        width, height = upright.size
        info = ImageInfo(sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data), format=fmt, width=width,
                         height=height)
        return Decoded(info=info, pixels=_to_rgb(upright, fresh=True) if width * height <= KEEP_PIXELS_UP_TO else None)


def decode_reduced(data: bytes, limits: ImageLimits, size: int) -> Image.Image:
    """The checks of ``decode_image``, then only as many pixels as a ``size`` x ``size`` preview needs: JPEG's draft
    mode decodes at 1/2, 1/4 or 1/8 scale, other formats are reduced after decoding. For thumbnails only: the
    detector needs native pixels (models/preprocessing.py)."""
    _check_byte_size(data, limits.max_bytes)
    image = _open_header(data, limits.max_pixels)
    with image:
        _check_pixels(image.size, limits.max_pixels)
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        _load_first_frame(image, limits.max_pixels)
        preview = _to_rgb(_upright(image), fresh=True)
    preview.thumbnail((size, size), reducing_gap=2.0)
    return preview


def _open_checked(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    """Open, check and fully decode the first frame; returns it with its format name."""
    _check_byte_size(data, limits.max_bytes)
    image = _open_header(data, limits.max_pixels)
    try:
        _check_pixels(image.size, limits.max_pixels)
        _load_first_frame(image, limits.max_pixels)
    except BaseException:
        image.close()
        raise
    return image, FORMAT_NAMES.get(image.format or "", image.format or "")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag, 1 (upright) when absent or unreadable: metadata never refuses an image."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF raises whatever Pillow's parser trips on; upright is safe
        return 1


def _upright(image: Image.Image) -> Image.Image:
    """A new image, turned as its EXIF orientation says (a copy when it says nothing): the caller closes ``image``."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - as above: a bad orientation tag leaves the image as stored
        return image.copy()


def _check_byte_size(data: bytes, max_bytes: int | None) -> None:
    if max_bytes is not None and len(data) > max_bytes:
        raise FakewatchError(
            "too_large",
            f"The image is {mebibytes(len(data))}; the limit is {mebibytes(max_bytes, limit=True)}. "
            "Send a smaller or more compressed file.",
            413,
        )
    if not data:
        raise FakewatchError("invalid_image", "The file is empty; send the image's bytes.", 422)


def _open_header(data: bytes, max_pixels: int | None) -> Image.Image:
    """Read only the header, with only the allow-listed plugins."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_PLUGINS)
    except Image.DecompressionBombError as exc:
        # Pillow's own bomb guard fires inside open() for headers above twice its limit: the message names our
        # cap, which is what the sender can act on, never Pillow's internal one.
        raise _too_many_pixels(max_pixels, "declares a size far above") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if _is_text_chunk_bomb(exc):  # a text chunk before the pixels
            raise _text_chunk_bomb() from exc
        raise _unreadable_error(data) from exc


def _unreadable_error(data: bytes) -> FakewatchError:
    """Name what the bytes are when no allowed plugin would read them."""
    if any(data[offset : offset + len(magic)] == magic for magic, offset in ALLOWED_MAGIC):
        return FakewatchError(
            "invalid_image",
            "The file starts like an image but its header is broken; it may be truncated or corrupt. "
            "Send the original file again.",
            422,
        )
    return FakewatchError("unsupported_format", f"{refused_as(data)} a supported image: send a {ALLOWED_LIST} file.",
                          415)


def refused_as(data: bytes) -> str:
    """The start of a refusal naming what the bytes are, where their magic says ("This is an HTML page, not")."""
    head = data[:512].lstrip().lower()
    kind = next((name for magic, name in REFUSED_MAGIC if head.startswith(magic.lower())), None)
    return f"This is {kind}, not" if kind else "This is not"


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise FakewatchError("invalid_image", f"The image declares an empty size ({width}x{height}).", 422)
    if max_pixels is not None and width * height > max_pixels:
        raise FakewatchError(
            "too_many_pixels",
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} MP); the limit is "
            f"{max_pixels / 1e6:.0f} MP. Resize it before sending.",
            413,
        )


def _too_many_pixels(max_pixels: int | None, what: str) -> FakewatchError:
    cap = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    limit = f"{cap / 1e6:.0f} MP" if cap else "what can be decoded safely"
    return FakewatchError("too_many_pixels", f"The image {what} the limit of {limit} and was refused unread. "
                                             "Resize it before sending.", 413)


def _load_first_frame(image: Image.Image, max_pixels: int | None) -> None:
    """Decode every pixel of the first frame, so a truncated or corrupt file fails here."""
    try:
        image.seek(0)
        image.load()
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(max_pixels, "is larger than") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if _is_text_chunk_bomb(exc):
            raise _text_chunk_bomb() from exc
        raise FakewatchError(
            "invalid_image",
            f"The {image.format} image could not be decoded ({exc}); it may be truncated or corrupt. "
            "Send the original file again.",
            422,
        ) from exc


# Pillow refuses a PNG whose compressed text chunk inflates past PngImagePlugin.MAX_TEXT_CHUNK (1 MiB) or whose
# text adds up past MAX_TEXT_MEMORY, as a ValueError naming the cap: the pixels may be fine, the metadata is not.
def _text_chunk_bomb() -> FakewatchError:
    return FakewatchError(
        "invalid_image",
        "The PNG's text metadata (a compressed zTXt or iTXt chunk) inflates past 1 MiB, so the file was refused "
        "as a decompression bomb. Remove the metadata (re-save the image) and send it again.",
        400,
    )


def _is_text_chunk_bomb(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and ("MAX_TEXT_CHUNK" in str(exc) or "MAX_TEXT_MEMORY" in str(exc))


def _to_rgb(image: Image.Image, *, fresh: bool = False) -> Image.Image:
    """RGB, with transparent areas laid on white: what hides under alpha is not what a person sees. ``fresh``: the
    image is a copy nobody else holds (``_upright``'s), so an RGB one is returned as it is, not copied again (a
    copy of every upload's pixels, about 3% of the API's time per upload)."""
    if fresh and image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


MIB = 1024 * 1024


def mebibytes(size: int, limit: bool = False) -> str:
    """A size as every message writes it, in MiB: a measured size with one decimal ("20.0 MiB"), a limit as set
    ("20 MiB", or "0.5 MiB" when it is not a whole number)."""
    if limit and size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size / MIB:.1f} MiB" if size >= MIB // 10 or not limit else f"{size / MIB:.2f} MiB"
