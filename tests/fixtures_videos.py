"""Clips made with PyAV from photos that ship in skimage and scikit-learn (no download), in several codecs and
containers, animations made with Pillow, and the hostile-video corpus: each file built here, in memory."""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
from PIL import Image

# (container format for PyAV, codec, pixel format) by the name the tests use.
CLIP_KINDS = {
    "h264-mp4": ("mp4", "libx264", "yuv420p"),
    "vp9-webm": ("webm", "libvpx-vp9", "yuv420p"),
    "h264-mkv": ("matroska", "libx264", "yuv420p"),
    "h264-mov": ("mov", "libx264", "yuv420p"),
    "mjpeg-mkv": ("matroska", "mjpeg", "yuvj420p"),
}
FAST_OPTIONS = {"libx264": {"preset": "ultrafast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}


def scene_photos(width: int, height: int) -> list[np.ndarray]:
    """Distinct photos at this size, one per scene."""
    import skimage.data  # noqa: PLC0415 - seconds to import; only tests that need clips pay for it

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    return [np.asarray(Image.fromarray(photo).convert("RGB").resize((width + 64, height))) for photo in photos]


def clip_frames(seconds: float, fps: int, width: int, height: int, scenes: int = 2) -> list[np.ndarray]:
    """A slow pan over one photo per scene, cutting to the next photo at equal intervals."""
    photos = scene_photos(width, height)
    total = max(1, round(seconds * fps))
    frames = []
    for index in range(total):
        photo = photos[min(scenes - 1, index * scenes // total) % len(photos)]
        offset = index % 64
        frames.append(np.ascontiguousarray(photo[:, offset : offset + width]))
    return frames


def encode_clip(frames: list[np.ndarray], kind: str = "h264-mp4", fps: int = 10) -> bytes:
    """The frames encoded by PyAV into one of CLIP_KINDS."""
    container_format, codec, pix_fmt = CLIP_KINDS[kind]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps, options=FAST_OPTIONS.get(codec, {}))
        assert isinstance(stream, av.VideoStream)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def make_clip(kind: str = "h264-mp4", seconds: float = 3.0, fps: int = 10, width: int = 160, height: int = 120,
              scenes: int = 2) -> bytes:
    return encode_clip(clip_frames(seconds, fps, width, height, scenes), kind, fps)


def make_animation(fmt: str = "GIF", frames: int = 12, size: int = 96, duration_ms: int = 100) -> bytes:
    """An animated GIF, WebP or PNG (APNG) of a pan across a photo."""
    pixels = clip_frames(frames / 10, 10, size, size)
    images = [Image.fromarray(frame) for frame in pixels[:frames]]
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


# --- the hostile corpus ------------------------------------------------------------------------------------------


def claims_huge_frames() -> bytes:
    """An MJPEG MKV whose header and pictures declare 60000x60000 frames: a 320x256 clip with its PixelWidth and
    PixelHeight elements (two-byte values in EBML) and each JPEG's start-of-frame rewritten to 0xEA60."""
    clip = make_clip("mjpeg-mkv", seconds=0.5, width=320, height=256, scenes=1)
    width, height = b"\xb0\x82\x01\x40", b"\xba\x82\x01\x00"
    assert clip.count(width) == 1 and clip.count(height) == 1
    start_of_frame = b"\xff\xc0\x00\x11\x08\x01\x00\x01\x40"
    assert clip.count(start_of_frame) == 5
    return (clip.replace(width, b"\xb0\x82\xea\x60").replace(height, b"\xba\x82\xea\x60")
            .replace(start_of_frame, b"\xff\xc0\x00\x11\x08\xea\x60\xea\x60"))


def audio_only(seconds: float = 1.0) -> bytes:
    """An MP4 holding one AAC audio stream and no video."""
    buffer = io.BytesIO()
    rate = 8000
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        assert isinstance(stream, av.AudioStream)
        samples = (np.sin(np.arange(int(rate * seconds)) / 5) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def tiny_frames(count: int = 10_000, fps: int = 100) -> bytes:
    """A WebM of ``count`` one-pixel frames (VP9 codes a 1x1 picture)."""
    colours = [np.full((1, 1, 3), (index * 37) % 256, dtype=np.uint8) for index in range(count)]
    return encode_clip(colours, "vp9-webm", fps)


def not_a_video() -> bytes:
    """What a page might serve as clip.mp4: an HTML error page."""
    return b"<!doctype html><html><body>404 Not Found</body></html>"


def fake_ftyp() -> bytes:
    """Starts like an MP4 (an ftyp box), then garbage."""
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8


def tagged_clip(handler_name: str, **clip: Any) -> bytes:
    """A clip remuxed (not re-encoded) with its video stream's handler name set, as a generator might write it."""
    out = io.BytesIO()
    with av.open(io.BytesIO(make_clip(**clip)), "r") as source, av.open(out, "w", format="mp4") as target:
        stream_in = source.streams.video[0]
        stream = target.add_stream_from_template(stream_in)
        stream.metadata["handler_name"] = handler_name
        for packet in source.demux(stream_in):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return out.getvalue()


def reencoded_copy(data: bytes, scale: float = 0.75, trim_s: float = 0.5, kind: str = "vp9-webm") -> bytes:
    """What a re-upload does to a clip: decoded, its first ``trim_s`` seconds cut, scaled, encoded again."""
    with av.open(io.BytesIO(data), "r") as source:
        stream = source.streams.video[0]
        fps = int(stream.average_rate or 10)
        frames = [frame for frame in source.decode(stream) if (frame.time or 0.0) >= trim_s]
        width = round(frames[0].width * scale) // 2 * 2
        height = round(frames[0].height * scale) // 2 * 2
        pixels = [frame.to_ndarray(width=width, height=height, format="rgb24") for frame in frames]
    return encode_clip(pixels, kind, fps)
