"""Still or moving: which decoder untrusted bytes go to, decided from their magic numbers (never a file name or a
Content-Type). Clips and animations go to core/video.py, everything else to core/decoding.py."""

from __future__ import annotations

from PIL import Image

from core.decoding import ALLOWED_LIST as IMAGE_LIST
from core.decoding import ImageInfo, ImageLimits, decode_checked, inspect_image, refused_as
from core.errors import FakewatchError
from core.video import ALLOWED_LIST as VIDEO_LIST
from core.video import VideoInfo, VideoLimits, inspect_video, media_kind, sniff_container

MediaInfo = ImageInfo | VideoInfo


def is_video(data: bytes) -> bool:
    """A clip container, or an image of more than one frame (an animation is judged as a clip)."""
    return media_kind(data) is not None


def inspect_media(data: bytes, image_limits: ImageLimits, video_limits: VideoLimits) -> MediaInfo:
    """inspect_video for a clip or animation, inspect_image for anything else (which refuses what is neither)."""
    if is_video(data):
        return inspect_video(data, video_limits)
    return inspect_image(data, image_limits)


def decode_media(data: bytes, image_limits: ImageLimits,
                 video_limits: VideoLimits) -> tuple[MediaInfo, Image.Image | None]:
    """What intake needs of bytes that may be a still or a clip, in one pass: a clip's info (its frames are decoded
    by the worker), or a still's info and upright pixels. Bytes that are neither are refused naming both kinds,
    since whoever sent them may send either."""
    if is_video(data):
        return inspect_video(data, video_limits), None
    try:
        decoded = decode_checked(data, image_limits)
    except FakewatchError as exc:
        if exc.code != "unsupported_format":
            raise
        raise FakewatchError("unsupported_format", f"{refused_as(data)} a supported image or video: send a "
                             f"{IMAGE_LIST} image, or an {VIDEO_LIST}.", 415) from exc
    return decoded.info, decoded.pixels


def may_be_video(head: bytes) -> bool:
    """Whether bytes starting with ``head`` (a first chunk) may be a clip or animation: a clip container, or a GIF,
    PNG or WebP, which only a full read can tell from a still."""
    return sniff_container(head) is not None or head.startswith((b"GIF8", b"\x89PNG")) or head[8:12] == b"WEBP"


def byte_cap(head: bytes, image_limits: ImageLimits, video_limits: VideoLimits) -> int | None:
    """The most bytes worth reading of a body that starts with ``head``: a clip's cap where it may be one, else a
    still's, so a JPEG is cut off at the image cap while it streams."""
    return video_limits.max_bytes if may_be_video(head) else image_limits.max_bytes
