"""Decoding untrusted video bytes: what a clip is, whether it may be decoded, and which of its frames are scored.

Containers (MP4, MOV, WebM, MKV) are read with PyAV, which ships its own FFmpeg: no system FFmpeg, no subprocess.
Animated GIF, WebP and APNG are read with Pillow's allow-listed plugins (FFmpeg's WebP decoder reads stills
only); both yield the same frames to the same sampler, so an animation is judged like a clip, never by its first
frame.

Order matters, as for stills (core/decoding.py): the byte cap first; the kind is sniffed from the magic numbers by
us and the demuxer is forced to it (so FFmpeg never probes for playlists or other formats that reference files);
the header's duration and frame size are checked before a frame is decoded; then frames are decoded one at a
time, each checked again (a header can lie), counted and timed, and dropped unless the sampler keeps it.

Sampling (``Sampling``): one frame every ``every_s`` seconds, from the first frame on, plus frames where the
picture changes sharply (a scene change: the mean absolute difference of 16x16 grey thumbnails, probed every
``probe_s`` seconds, above ``scene_threshold`` of 255); at most ``max_frames`` in all, three quarters of them for
the regular grid. A clip too long for the grid at ``every_s`` gets a wider step (its known duration divided by
the grid's share), and when the duration is not known the grid is thinned as it grows (every other frame dropped,
the step doubled), so the frames always spread over the whole clip. A scene change within ``probe_s`` of a kept
frame adds nothing; beyond their share, the sharpest changes are kept.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from core.decoding import _to_rgb, mebibytes
from core.errors import FakewatchError

CONTAINERS = ("MP4", "MOV", "WEBM", "MKV")
ANIMATIONS = ("GIF", "WEBP", "PNG")
# The demuxer each container is opened with: forced, never probed.
DEMUXERS = {"MP4": "mp4", "MOV": "mov", "WEBM": "matroska", "MKV": "matroska"}
# Decoders a clip's video stream may use; anything else (screen codecs, raw formats, ...) is refused unread.
ALLOWED_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg"})
# ISO-BMFF brands of still images (HEIC, AVIF): those go to core/decoding.py.
IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
                          b"avio"})
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MIME_TYPES = {"MP4": "video/mp4", "MOV": "video/quicktime", "WEBM": "video/webm", "MKV": "video/x-matroska"}
ALLOWED_LIST = "MP4, MOV, WebM or MKV clip, or an animated GIF, WebP or PNG"
THUMB = 16
PER_SECOND_SIDE = 512  # PDQ works on a 512 px copy at most
# Decode errors tolerated in one clip (a damaged packet is skipped) before it counts as corrupt.
MAX_BAD_PACKETS = 16


@dataclass(frozen=True)
class VideoLimits:
    """The caps a clip is decoded under (each a setting: FAKEWATCH_VIDEO_MAX_*)."""

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 600.0
    # Long side by short side, so a portrait 2160x3840 clip passes as its landscape twin does.
    max_width: int = 3840
    max_height: int = 2160
    max_frames: int = 40_000  # frames decoded, sampled or not: ten minutes at about 60 fps
    max_decode_s: float = 60.0


@dataclass(frozen=True)
class Sampling:
    every_s: float = 1.0
    max_frames: int = 64
    probe_s: float = 0.25
    scene_threshold: float = 30.0
    # Kept frames are scaled down to this long side (memory: 64 frames of 1280x720 RGB are 177 MB at most).
    max_side: int = 1280


@dataclass(frozen=True)
class VideoInfo:
    sha256: str
    byte_size: int
    format: str  # "MP4", "MOV", "WEBM", "MKV", or "GIF", "WEBP", "PNG" for an animation
    width: int
    height: int
    duration_s: float | None  # None when neither the header nor the frames say
    codec: str
    # The container's and the video stream's metadata tags (encoder, handler, comment...), capped: provenance reads
    # generator names in them (backend/provenance/video_tags.py).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SampledFrame:
    time_s: float
    image: Image.Image  # RGB, at most Sampling.max_side on its long side
    scale: float  # image pixels per clip pixel (1.0 unless it was scaled down)
    scene_change: bool = False


@dataclass
class Decoded:
    """One decoded frame: its time and a way to convert it, so a dropped frame is never converted to RGB."""

    time_s: float
    width: int
    height: int
    _frame: Any  # an av.VideoFrame or a PIL image

    def thumbnail(self) -> np.ndarray:
        if isinstance(self._frame, Image.Image):
            small = self._frame.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
            return np.asarray(small, dtype=np.float32)
        return np.asarray(self._frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray(),
                          dtype=np.float32)[:THUMB, :THUMB]

    def rgb(self, max_side: int) -> tuple[Image.Image, float]:
        scale = min(1.0, max_side / max(self.width, self.height))
        width, height = max(1, round(self.width * scale)), max(1, round(self.height * scale))
        if isinstance(self._frame, Image.Image):
            image = _to_rgb(self._frame)  # transparency laid on white, as for stills
            return (image if scale == 1.0 else image.resize((width, height), Image.Resampling.BILINEAR)), scale
        return self._frame.to_image(width=width, height=height), scale


# --- what the bytes are --------------------------------------------------------------------------------------------


def sniff_container(data: bytes) -> str | None:
    """The container kind from the magic numbers, or None when the bytes are not a clip container."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in IMAGE_BRANDS:
            return None
        return "MOV" if brand == b"qt  " else "MP4"
    if data[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # an old QuickTime file with no ftyp box
        return "MOV"
    if data.startswith(EBML_MAGIC):
        return "WEBM" if b"webm" in data[:64] else "MKV"
    return None


def is_animation(data: bytes) -> str | None:
    """"GIF", "WEBP" or "PNG" for an image of more than one frame (read from its header), else None."""
    if not (data.startswith((b"GIF8", b"\x89PNG")) or data[8:12] == b"WEBP"):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=ANIMATIONS) as image:
            if getattr(image, "is_animated", False) and image.format in ANIMATIONS:
                return str(image.format)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None  # the still-image path refuses it with its own message
    return None


def media_kind(data: bytes) -> str | None:
    """The format of a clip or animation, or None for a still image (or anything else)."""
    return sniff_container(data) or is_animation(data)


# --- checks made before any frame is decoded -----------------------------------------------------------------------


def inspect_video(data: bytes, limits: VideoLimits) -> VideoInfo:
    """Check a clip's bytes and header; raises FakewatchError naming the limit when refused."""
    _check_bytes(data, limits)
    kind = media_kind(data)
    if kind is None:
        raise FakewatchError("unsupported_format", f"This is not a supported video: send an {ALLOWED_LIST}.", 415)
    if kind in ANIMATIONS:
        return _inspect_animation(data, kind, limits)
    with _open_container(data, kind) as container:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_frame_size(width, height, limits)
        duration = _header_duration(container, stream)
        _check_duration(duration, limits)
        return VideoInfo(sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data), format=kind, width=width,
                         height=height, duration_s=duration, codec=stream.codec_context.name,
                         tags=_tags(container, stream))


def _check_bytes(data: bytes, limits: VideoLimits) -> None:
    if not data:
        raise FakewatchError("invalid_video", "The file is empty; send the video's bytes.", 422)
    if len(data) > limits.max_bytes:
        raise FakewatchError("too_large", f"The video is {mebibytes(len(data))}; the limit is "
                                          f"{mebibytes(limits.max_bytes, limit=True)} (FAKEWATCH_VIDEO_MAX_BYTES). "
                                          "Send a shorter or more compressed clip.", 413)


def _check_frame_size(width: int, height: int, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        # FFmpeg leaves the size at 0x0 when it could not decode a first picture (one declaring 60000x60000 pixels
        # is refused by its own guard before any memory is taken).
        raise FakewatchError("invalid_video", "The video's frame size could not be read from its first picture "
                                              f"({width}x{height}); it may be corrupt or far too large.", 422)
    if max(width, height) > limits.max_width or min(width, height) > limits.max_height:
        raise FakewatchError("frame_too_large", f"The video's frames are {width}x{height}; the limit is "
                                                f"{limits.max_width}x{limits.max_height} (FAKEWATCH_VIDEO_MAX_WIDTH, "
                                                "FAKEWATCH_VIDEO_MAX_HEIGHT). Scale it down before sending.", 413)


def _check_duration(duration: float | None, limits: VideoLimits) -> None:
    if duration is not None and duration > limits.max_duration_s:
        raise FakewatchError("video_too_long", f"The video lasts {duration:.0f} s; the limit is "
                                               f"{limits.max_duration_s:.0f} s (FAKEWATCH_VIDEO_MAX_DURATION_S). "
                                               "Trim it before sending.", 413)


def _too_many_frames(limits: VideoLimits) -> FakewatchError:
    return FakewatchError("too_many_frames", f"The video has more than {limits.max_frames} frames "
                                             "(FAKEWATCH_VIDEO_MAX_FRAMES), the most decoded for one check.", 413)


def _decode_timeout(limits: VideoLimits) -> FakewatchError:
    return FakewatchError("decode_timeout", f"Decoding the video took more than {limits.max_decode_s:.0f} s "
                                            "(FAKEWATCH_VIDEO_MAX_DECODE_S); send a shorter or smaller clip.", 413)


def _corrupt(detail: str) -> FakewatchError:
    return FakewatchError("invalid_video", f"The video could not be decoded ({detail}); it may be truncated or "
                                           "corrupt. Send the original file again.", 422)


def _open_container(data: bytes, kind: str) -> Any:
    import av  # noqa: PLC0415 - FFmpeg's libraries load only in processes that meet a video

    try:
        return av.open(io.BytesIO(data), mode="r", format=DEMUXERS[kind],
                       options={"probesize": "5000000", "analyzeduration": "5000000"})
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise _corrupt(f"its {kind} header could not be read: {exc}") from exc


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams}) or ["no"]
        raise FakewatchError("no_video_stream", f"The file holds {' and '.join(kinds)} streams but no video; send a "
                                                "clip with pictures.", 422)
    stream = container.streams.video[0]
    name = stream.codec_context.name
    if name not in ALLOWED_CODECS:
        raise FakewatchError("unsupported_codec", f"The video is encoded with {name}; send H.264, H.265, VP8, VP9, "
                                                  "AV1, MPEG-4 or MJPEG.", 415)
    return stream


MAX_TAGS, MAX_TAG_CHARS = 64, 2000


def _tags(container: Any, stream: Any) -> dict[str, str]:
    """Metadata tags of the container, then of the video stream (prefixed "stream:"), capped in number and size."""
    pairs = [(str(key), str(value)) for key, value in dict(container.metadata).items()]
    pairs += [(f"stream:{key}", str(value)) for key, value in dict(stream.metadata).items()]
    return {key[:100]: value[:MAX_TAG_CHARS] for key, value in pairs[:MAX_TAGS]}


def _header_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return None


def _inspect_animation(data: bytes, kind: str, limits: VideoLimits) -> VideoInfo:
    with Image.open(io.BytesIO(data), formats=ANIMATIONS) as image:
        width, height = image.size
        _check_frame_size(width, height, limits)
        frames = int(getattr(image, "n_frames", 1))
        if frames > limits.max_frames:
            raise _too_many_frames(limits)
    return VideoInfo(sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data), format=kind, width=width,
                     height=height, duration_s=None, codec=kind.lower())


# --- decoding frames, one at a time ----------------------------------------------------------------------------------


def iter_frames(data: bytes, limits: VideoLimits, info: VideoInfo | None = None) -> Iterator[Decoded]:
    """Every frame of a clip in order, each checked against the limits as it is decoded; nothing is kept.
    ``info``: what inspect_video said of these bytes, when the caller has it."""
    info = info or inspect_video(data, limits)
    started = time.monotonic()
    count = 0
    source = _animation_frames(data) if info.format in ANIMATIONS else _container_frames(data, info.format, limits)
    for frame in source:
        count += 1
        if count > limits.max_frames:
            raise _too_many_frames(limits)
        if time.monotonic() - started > limits.max_decode_s:
            raise _decode_timeout(limits)
        _check_frame_size(frame.width, frame.height, limits)
        _check_duration(frame.time_s, limits)
        yield frame
    if count == 0:
        raise _corrupt("no frame could be decoded")


def _container_frames(data: bytes, kind: str, limits: VideoLimits) -> Iterator[Decoded]:
    import av  # noqa: PLC0415

    with _open_container(data, kind) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        # FFmpeg's own guard: no frame buffer above the cap is ever allocated, whatever a later picture declares.
        stream.codec_context.options = {"max_pixels": str(limits.max_width * limits.max_height)}
        bad = 0
        fallback_rate = float(stream.average_rate or 25)
        index = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                bad += 1  # a damaged packet: skip it, as a player would, unless the whole clip is damage
                if bad > MAX_BAD_PACKETS:
                    raise _corrupt(str(exc)) from exc
                continue
            for frame in frames:
                seconds = frame.time if frame.time is not None else index / fallback_rate
                index += 1
                yield Decoded(time_s=max(0.0, float(seconds)), width=frame.width, height=frame.height, _frame=frame)


def _animation_frames(data: bytes) -> Iterator[Decoded]:
    with Image.open(io.BytesIO(data), formats=ANIMATIONS) as image:
        elapsed_ms = 0  # summed in whole milliseconds: ten frames of 0.1 s must reach 1.0 s exactly
        for index in range(int(getattr(image, "n_frames", 1))):
            try:
                image.seek(index)
                image.load()
            except (OSError, EOFError, ValueError, SyntaxError) as exc:
                if index == 0:
                    raise _corrupt(str(exc)) from exc
                return  # a truncated animation: the frames before the damage are judged
            # 10 ms is what browsers show for a GIF frame that claims less.
            duration_ms = max(10, round(float(image.info.get("duration") or 100)))
            yield Decoded(time_s=elapsed_ms / 1000, width=image.width, height=image.height, _frame=image.copy())
            elapsed_ms += duration_ms


# --- which frames are scored -------------------------------------------------------------------------------------------


@dataclass
class _Sampler:
    sampling: Sampling
    step: float
    grid: dict[int, SampledFrame] = field(default_factory=dict)  # slot k holds the first frame at or after k*step
    scenes: list[tuple[float, float, SampledFrame]] = field(default_factory=list)  # min-heap by change size
    last_probe: tuple[float, np.ndarray] | None = None

    @property
    def grid_cap(self) -> int:
        return max(1, self.sampling.max_frames * 3 // 4)

    def offer(self, frame: Decoded) -> None:
        slot = int(frame.time_s // self.step)
        if slot not in self.grid:
            self.grid[slot] = self._keep(frame)
            self._thin()
            return
        self._probe(frame)

    def _keep(self, frame: Decoded, scene_change: bool = False) -> SampledFrame:
        image, scale = frame.rgb(self.sampling.max_side)
        return SampledFrame(time_s=round(frame.time_s, 3), image=image, scale=scale, scene_change=scene_change)

    def _thin(self) -> None:
        """Too many grid frames (a clip longer than its header said, or of unknown length): every other goes."""
        while len(self.grid) > self.grid_cap:
            self.step *= 2
            self.grid = {slot // 2: frame for slot, frame in self.grid.items() if slot % 2 == 0}

    def _probe(self, frame: Decoded) -> None:
        if self.last_probe is not None and frame.time_s - self.last_probe[0] < self.sampling.probe_s:
            return
        thumb = frame.thumbnail()
        previous, self.last_probe = self.last_probe, (frame.time_s, thumb)
        if previous is None or thumb.shape != previous[1].shape:
            return
        change = float(np.abs(thumb - previous[1]).mean())
        if change < self.sampling.scene_threshold or self._near_kept(frame.time_s):
            return
        room = self.sampling.max_frames - self.grid_cap
        if room <= 0:
            return
        if len(self.scenes) < room:
            heapq.heappush(self.scenes, (change, frame.time_s, self._keep(frame, scene_change=True)))
        elif change > self.scenes[0][0]:
            heapq.heapreplace(self.scenes, (change, frame.time_s, self._keep(frame, scene_change=True)))

    def _near_kept(self, time_s: float) -> bool:
        return any(abs(kept.time_s - time_s) < self.sampling.probe_s
                   for kept in [*self.grid.values(), *(scene for _, _, scene in self.scenes)])

    def frames(self) -> list[SampledFrame]:
        kept = list(self.grid.values()) + [scene for _, _, scene in self.scenes]
        return sorted(kept, key=lambda frame: frame.time_s)


@dataclass(frozen=True)
class Video:
    info: VideoInfo
    frames: list[SampledFrame]
    duration_s: float  # the header's, else the last decoded frame's time
    decoded: int  # frames decoded in all


def sample_video(data: bytes, limits: VideoLimits, sampling: Sampling = Sampling(),
                 progress: Callable[[float, float | None], None] | None = None,
                 each_second: Callable[[float, Image.Image], None] | None = None) -> Video:
    """Decode a clip under the limits and keep the frames the sampling rule picks (see the module's docstring).
    ``progress(seconds decoded, duration or None)`` is called about once a second of clip, for a long clip's
    progress bar; ``each_second(time, image)`` gets the first frame of each whole second (at most 512 px on its
    long side), for vPDQ hashes, in the same decoding pass."""
    info = inspect_video(data, limits)
    duration = info.duration_s
    step = sampling.every_s
    if duration:
        step = max(step, duration / max(1, sampling.max_frames * 3 // 4))
    sampler = _Sampler(sampling=sampling, step=step)
    last_time, decoded, reported, second = 0.0, 0, -1, -1
    for frame in iter_frames(data, limits, info):
        sampler.offer(frame)
        if each_second is not None and int(frame.time_s) > second:
            second = int(frame.time_s)
            each_second(frame.time_s, frame.rgb(PER_SECOND_SIDE)[0])
        last_time, decoded = frame.time_s, decoded + 1
        if progress is not None and int(last_time) > reported:
            reported = int(last_time)
            progress(last_time, duration)
    return Video(info=info, frames=sampler.frames(), duration_s=round(duration or last_time, 3), decoded=decoded)
