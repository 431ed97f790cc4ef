"""Still or moving: which decoder untrusted bytes go to, decided from their magic numbers (never a file name or a
Content-Type). Clips and animations go to core/video.py, everything else to core/decoding.py."""

from __future__ import annotations

from core.decoding import ImageInfo, ImageLimits, inspect_image
from core.video import VideoInfo, VideoLimits, inspect_video, media_kind

MediaInfo = ImageInfo | VideoInfo


def is_video(data: bytes) -> bool:
    """A clip container, or an image of more than one frame (an animation is judged as a clip)."""
    return media_kind(data) is not None


def inspect_media(data: bytes, image_limits: ImageLimits, video_limits: VideoLimits) -> MediaInfo:
    """inspect_video for a clip or animation, inspect_image for anything else (which refuses what is neither)."""
    if is_video(data):
        return inspect_video(data, video_limits)
    return inspect_image(data, image_limits)
