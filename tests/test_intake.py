"""Intake of untrusted bytes: real photos in every allowed format, and the files that must be refused."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from sklearn.datasets import load_sample_images

from core.decoding import LOCAL_FILES, ImageLimits, decode_checked, decode_image, inspect_image, mebibytes
from core.errors import FakewatchError
from testbed.stack import isolated_settings

ALLOWED_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "AVIF", "HEIF"]
LOSSLESS_FORMATS = {"PNG", "BMP"}


@pytest.fixture(scope="module")
def limits() -> ImageLimits:
    """The caps uploads are decoded under by default (20 MiB, 40 MP)."""
    return isolated_settings().image_limits


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    """A real photo that is wider than tall (451x300), so a quarter turn shows."""
    return Image.fromarray(skimage_data.chelsea())


@pytest.fixture(scope="module")
def china() -> Image.Image:
    return Image.fromarray(load_sample_images().images[0])


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def refusal(data: bytes, limits: ImageLimits) -> FakewatchError:
    with pytest.raises(FakewatchError) as caught:
        inspect_image(data, limits)
    with pytest.raises(FakewatchError) as caught_decode:
        decode_image(data, limits)
    assert caught_decode.value.code == caught.value.code
    return caught.value


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_real_photo_in_each_allowed_format_is_accepted(fmt: str, chelsea: Image.Image, limits: ImageLimits) -> None:
    data = encode(chelsea, fmt)

    info = inspect_image(data, limits)
    decoded = decode_image(data, limits)

    assert info.format == fmt
    assert (info.width, info.height) == (451, 300)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.byte_size == len(data)
    assert decoded.mode == "RGB" and decoded.size == (451, 300)
    difference = np.abs(np.asarray(decoded, dtype=int) - np.asarray(chelsea, dtype=int)).mean()
    if fmt in LOSSLESS_FORMATS:
        assert difference == 0
    else:
        assert difference < 12, f"{fmt} decoded to something unlike the photo (mean error {difference:.1f})"


def test_second_sample_photo_decodes_the_same_through_both_functions(china: Image.Image, limits: ImageLimits) -> None:
    data = encode(china, "JPEG", quality=90)
    info = inspect_image(data, limits)
    assert (info.width, info.height) == decode_image(data, limits).size == (640, 427)


def test_exif_orientation_is_applied(chelsea: Image.Image, limits: ImageLimits) -> None:
    marked = chelsea.copy()
    marked.paste((255, 0, 0), (0, 0, 60, 60))  # a red top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(marked, "JPEG", exif=exif, quality=95)

    info = inspect_image(data, limits)
    upright = decode_image(data, limits)

    assert (info.width, info.height) == (300, 451)
    assert upright.size == (300, 451)
    # Turned a quarter clockwise, the top-left corner is now top-right.
    top_right = np.asarray(upright.crop((250, 0, 300, 50))).mean(axis=(0, 1))
    top_left = np.asarray(upright.crop((0, 0, 50, 50))).mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60
    assert not (top_left[0] > 200 and top_left[1] < 60)


def test_animated_gif_gives_its_first_frame(limits: ImageLimits) -> None:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3

    info = inspect_image(data, limits)
    first = np.asarray(decode_image(data, limits)).mean(axis=(0, 1))

    assert (info.format, info.width, info.height) == ("GIF", 64, 48)
    assert first[0] > 150 and first[1] < 50 and first[2] < 50


def test_animated_webp_gives_its_first_frame(limits: ImageLimits) -> None:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((0, 0, 200), (200, 0, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)

    first = np.asarray(decode_image(data, limits)).mean(axis=(0, 1))

    assert inspect_image(data, limits).format == "WEBP"
    assert first[2] > 150 and first[0] < 50


def test_transparent_areas_are_laid_on_white(limits: ImageLimits) -> None:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    decoded = decode_image(encode(image, "PNG"), limits)
    assert decoded.mode == "RGB"
    assert np.asarray(decoded).min() == 255


def test_truncated_jpeg_is_invalid(chelsea: Image.Image, limits: ImageLimits) -> None:
    data = encode(chelsea, "JPEG")
    error = refusal(data[: len(data) // 2], limits)
    assert (error.code, error.status) == ("invalid_image", 422)
    assert "truncated" in error.message


def test_truncated_png_is_invalid(chelsea: Image.Image, limits: ImageLimits) -> None:
    data = encode(chelsea, "PNG")
    assert refusal(data[: len(data) - 5000], limits).code == "invalid_image"


def test_image_cut_inside_its_header_is_invalid(chelsea: Image.Image, limits: ImageLimits) -> None:
    assert refusal(encode(chelsea, "PNG")[:20], limits).code == "invalid_image"


def test_jpeg_header_with_garbage_body_is_invalid(limits: ImageLimits) -> None:
    garbage = np.random.default_rng(1).bytes(5000)
    assert refusal(b"\xff\xd8\xff\xe0" + garbage, limits).code == "invalid_image"


def test_empty_file_is_invalid(limits: ImageLimits) -> None:
    assert refusal(b"", limits).code == "invalid_image"


def test_random_bytes_are_unsupported(limits: ImageLimits) -> None:
    error = refusal(np.random.default_rng(0).bytes(4096), limits)
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert "JPEG" in error.message  # says what to send instead


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
HTML = b"<!DOCTYPE html><html><body><img src='cat.jpg'></body></html>"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (SVG, "SVG"),
        (SVG[SVG.index(b"<svg") :], "SVG"),
        (HTML, "HTML"),
        (b"  \n<html><body>not found</body></html>", "HTML"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
    ],
    ids=["svg-with-xml-prolog", "bare-svg", "html-page", "html-error-page", "pdf"],
)
def test_documents_are_unsupported_and_named(data: bytes, named: str, limits: ImageLimits) -> None:
    error = refusal(data, limits)
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert named in error.message


def test_tiff_photo_is_unsupported_although_pillow_reads_it(chelsea: Image.Image, limits: ImageLimits) -> None:
    error = refusal(encode(chelsea, "TIFF"), limits)
    assert error.code == "unsupported_format" and "TIFF" in error.message


def test_ico_is_unsupported(limits: ImageLimits) -> None:
    assert refusal(encode(Image.new("RGB", (16, 16)), "ICO"), limits).code == "unsupported_format"


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes whose PNG header declares width x height: the shape of a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height"),
    [(8_000, 8_000), (50_000, 50_000), (1, 2_000_000_000)],
    ids=["above-our-cap", "above-pillows-own-guard", "one-pixel-wide-strip"],
)
def test_decompression_bomb_is_refused_from_its_header(width: int, height: int, limits: ImageLimits) -> None:
    bomb = png_declaring(width, height)
    assert len(bomb) < 200

    started = time.perf_counter()
    error = refusal(bomb, limits)

    # The file is truncated far before its declared size: refusing as too_many_pixels (not invalid_image)
    # proves the decision came from the header, before any decoding.
    assert (error.code, error.status) == ("too_many_pixels", 413)
    assert time.perf_counter() - started < 0.5
    # Whichever guard fired (ours, or Pillow's inside open()), the message names the configured cap.
    assert "the limit is 40 MP" in error.message or "the limit of 40 MP" in error.message, error.message
    assert "89478485" not in error.message and "178956970" not in error.message, "never Pillow's internal cap"


def test_pixel_cap_follows_settings(chelsea: Image.Image) -> None:
    small_cap = isolated_settings(max_image_pixels=100_000).image_limits
    error = refusal(encode(chelsea, "PNG"), small_cap)  # 451 x 300 = 135,300 pixels
    assert error.code == "too_many_pixels" and "451x300" in error.message


def test_oversize_bytes_are_refused_before_anything_else(chelsea: Image.Image) -> None:
    data = encode(chelsea, "BMP")  # about 400 kB
    error = refusal(data, isolated_settings(max_image_bytes=100_000).image_limits)
    assert (error.code, error.status) == ("too_large", 413)
    assert "The image is 0.4 MiB; the limit is 0.10 MiB." in error.message, error.message


def test_sizes_are_written_in_mebibytes() -> None:
    """A 21,000,000-byte upload against the default 20 MiB cap (it once read "21.0 MB; the limit is 21.0 MB")."""
    error = refusal(b"\x00" * 21_000_000, isolated_settings().image_limits)
    assert error.message.startswith("The image is 20.0 MiB; the limit is 20 MiB."), error.message
    assert mebibytes(20 * 1024 * 1024, limit=True) == "20 MiB" and mebibytes(25 * 1024 * 1024) == "25.0 MiB"


def test_oversize_check_counts_bytes_not_validity() -> None:
    error = refusal(b"\x00" * 2_000, isolated_settings(max_image_bytes=1_000).image_limits)
    assert error.code == "too_large"


def test_local_files_are_decoded_without_the_upload_caps(limits: ImageLimits) -> None:
    """A person's own file above the upload caps still decodes under LOCAL_FILES; a bomb is still refused."""
    big = encode(Image.new("L", (7_000, 6_000), 128), "PNG")  # 42 MP: over the 40 MP an upload may have
    assert refusal(big, limits).code == "too_many_pixels"
    assert decode_image(big, LOCAL_FILES).size == (7_000, 6_000)
    assert inspect_image(big, ImageLimits(max_bytes=len(big), max_pixels=None)).width == 7_000
    assert refusal(png_declaring(50_000, 50_000), LOCAL_FILES).code == "too_many_pixels"


def test_decoded_pixels_are_a_copy_that_outlives_the_decoder(limits: ImageLimits) -> None:
    """Intake hands the decoded pixels on (hash, worker) after the decoder is closed: an RGB image is not copied a
    second time, yet what comes back is its own image, upright, whatever the file's orientation."""
    photo = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3))
    for orientation in (1, 6):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        photo.save(buffer, "PNG", exif=exif)
        decoded = decode_checked(buffer.getvalue(), limits)
        assert decoded.pixels is not None and decoded.pixels.mode == "RGB"
        assert decoded.pixels.size == ((40, 30) if orientation == 1 else (30, 40))
        expected = photo if orientation == 1 else photo.transpose(Image.Transpose.ROTATE_270)
        assert decoded.pixels.tobytes() == expected.tobytes()
        assert decode_image(buffer.getvalue(), limits).tobytes() == expected.tobytes()
