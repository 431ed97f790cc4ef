"""What the metadata readers hand to the matchers: one text value with where it came from and what role the
field plays, so a signature for tool names is never matched against a photographer's caption."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# tool: names a program or device (EXIF Software/Make/Model, XMP CreatorTool, a C2PA claim generator).
# caption: free text a person may write (descriptions, titles, credit lines, comments).
# params: structured generation settings (PNG text like A1111 "parameters", ComfyUI "prompt", EXIF UserComment).
# evidence: read by its name, never matched against the table (an IPTC digital source type, a remote manifest URL).
Role = Literal["tool", "caption", "params", "evidence"]


@dataclass(frozen=True)
class MetadataField:
    source: str  # where, as shown in a signal: "jpeg exif Software", "png tEXt 'parameters'"
    key: str  # the field's own name: "Software", "xmp:CreatorTool", "parameters"
    value: str
    role: Role
