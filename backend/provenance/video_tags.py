"""A clip's metadata tags (read by PyAV from the container and its video stream: core/video.py) as metadata fields,
so the same signature table that reads EXIF Software and XMP CreatorTool reads a video's encoder and handler
names (a generator that writes "Sora" or "Runway Gen-3" into its MP4 says so here)."""

from __future__ import annotations

from backend.provenance.fields import MetadataField, Role

# Tags that name a program or device; comments, titles and descriptions are free text (captions).
TOOL_TAGS = frozenset({"encoder", "encoded_by", "software", "handler_name", "vendor_id", "make", "model",
                       "com.apple.quicktime.software", "com.apple.quicktime.make", "com.apple.quicktime.model",
                       "writing_application", "writing_library", "muxing_application", "creation_tool"})
CAPTION_TAGS = frozenset({"comment", "description", "title", "synopsis", "artist", "copyright", "album", "genre",
                          "com.apple.quicktime.description", "com.apple.quicktime.comment"})


def tag_fields(tags: dict[str, str]) -> list[MetadataField]:
    """Each tag that may name a tool or carry a caption, as a field the matchers read."""
    fields = []
    for key, value in tags.items():
        name = key.removeprefix("stream:").lower()
        role: Role | None = "tool" if name in TOOL_TAGS else "caption" if name in CAPTION_TAGS else None
        if role is not None and value.strip():
            fields.append(MetadataField(source=f"video tag {key}", key=name, value=value, role=role))
    return fields
