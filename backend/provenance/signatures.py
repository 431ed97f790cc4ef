"""Known signatures of image generators (and of photo editors), matched against metadata fields: the one table.

Each row names a program, which fields it may be found in (by role, so a tool's name is looked for in
Software/CreatorTool/claim-generator fields, never in a caption a person wrote about it), an optional
field-name pattern and a value pattern. tests/test_provenance.py holds an example, and a test, for every row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from backend.provenance.evidence import Says, Signal
from backend.provenance.fields import MetadataField, Role

ANY: frozenset[Role] = frozenset({"tool", "caption", "params"})
TOOL: frozenset[Role] = frozenset({"tool"})


@dataclass(frozen=True)
class Signature:
    id: str
    name: str  # what a person reads: "AUTOMATIC1111 / Forge / SD.Next"
    what: str  # what the match is: "generation parameters"
    roles: frozenset[Role]
    value: re.Pattern[str] | None
    key: re.Pattern[str] | None = None
    kind: Literal["generator", "editor"] = "generator"
    says: Says = "ai"


def _p(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


SIGNATURES: tuple[Signature, ...] = (
    # --- Stable Diffusion front ends: structured settings in PNG text chunks or EXIF UserComment.
    Signature("a1111", "AUTOMATIC1111 / Forge / SD.Next", "generation parameters", ANY,
              _p(r"\bSteps: \d+,[^\n]{0,200}?\bSampler: [^,\n]{1,40}")),
    Signature("comfyui", "ComfyUI", "node graph", ANY,
              _p(r'"class_type"\s*:\s*"|"last_node_id"\s*:')),
    Signature("invokeai", "InvokeAI", "generation metadata", frozenset({"params"}), None,
              key=_p(r"invokeai_metadata|invokeai_graph|invokeai_workflow|sd-metadata|dream")),
    Signature("novelai", "NovelAI", "generator name", ANY, _p(r"\bNovelAI\b")),
    Signature("fooocus", "Fooocus", "generator name", ANY, _p(r"\bFooocus\b")),
    # --- Hosted generators, by the names they write into Software / CreatorTool / C2PA fields.
    Signature("midjourney", "Midjourney", "generator name", TOOL, _p(r"\bmidjourney\b")),
    Signature("midjourney_job", "Midjourney", "job id", frozenset({"caption", "params"}),
              _p(r"\bJob ID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")),
    Signature("openai", "OpenAI", "generator name", TOOL,
              _p(r"\b(?:OpenAI|DALL[\u00b7\-. ]?E(?: ?[23])?|ChatGPT|GPT-4o|gpt-image-\d|Sora)\b")),
    Signature("firefly", "Adobe Firefly", "generator name", TOOL, _p(r"(?<![a-z])firefly(?![a-z])")),
    Signature("google", "Google AI", "generator name", TOOL,
              _p(r"\bgoogle[ _-]?imagen\b|\bimagen-\d(?:\.\d)?-(?:generate|fast|capability)|\bgemini\b"
                 r"|\bsynthid\b|\bnano[ _-]?banana\b|\bgoogle ai\b")),
    Signature("google_credit", "Google AI", "credit line", frozenset({"caption"}),
              _p(r"\b(?:made|edited|created|generated) with google ai\b|\bsynthid\b")),
    Signature("microsoft", "Microsoft Designer / Bing Image Creator", "generator name",
              frozenset({"tool", "caption"}),
              _p(r"\bbing image creator\b|\bimage creator (?:from|in) (?:microsoft )?(?:bing|designer)\b"
                 r"|\bmicrosoft designer\b|\bmicrosoft responsible ai\b")),
    Signature("meta", "Meta AI", "generator name", frozenset({"tool", "caption"}),
              _p(r"\bimagined with ai\b|\bmeta ai\b")),
    Signature("stable_diffusion", "Stable Diffusion", "generator name", TOOL,
              _p(r"stable[ _-]?diffusion|stability[ ._-]?ai|\bdreamstudio\b|\bsdxl\b")),
    Signature("flux", "FLUX (Black Forest Labs)", "generator name", TOOL,
              _p(r"\bblack forest labs\b|\bflux[ ._-]?1(?:\.\d)?\b|\bflux[ ._-](?:dev|schnell|pro|kontext)\b")),
    Signature("flux_model", "FLUX (Black Forest Labs)", "model file", frozenset({"params"}),
              _p(r"\bflux(?:1[-_.]?|[-_.])(?:dev|schnell|pro|kontext)\b|\bflux\.1\b")),
    Signature("leonardo", "Leonardo.Ai", "generator name", TOOL, _p(r"\bleonardo[ ._-]?ai\b")),
    Signature("ideogram", "Ideogram", "generator name", TOOL, _p(r"\bideogram\b")),
    Signature("draw_things", "Draw Things", "generator name", TOOL, _p(r"\bdraw things\b")),
    Signature("other_generators", "AI image generator", "generator name", TOOL,
              _p(r"\b(?:runwayml|runway gen-\d|krea(?:\.ai)?|playground ?(?:ai|v\d)|kandinsky|craiyon"
                 r"|nightcafe|dreamina|jimeng|seedream|recraft|civitai|tensor\.art|pixai|seaart)\b")),
    # --- Video generators and face-swap tools, by the names they leave in a clip's encoder or handler tags.
    Signature("video_generators", "AI video generator", "generator name", TOOL,
              _p(r"\b(?:google veo|veo[ -]?[23]|kling(?: ai)?|pika(?: ?labs)?|luma dream machine|hailuo|minimax video"
                 r"|synthesia|heygen|hunyuan ?video|wan ?2\.\d|deepfacelab|faceswap|facefusion|roop)\b")),
    # --- Photo editors: the image was edited, which says nothing about AI either way.
    Signature("photoshop", "Adobe Photoshop", "editor name", TOOL, _p(r"\bphotoshop\b"),
              kind="editor", says="edited"),
    Signature("lightroom", "Adobe Lightroom", "editor name", TOOL, _p(r"\blightroom\b"),
              kind="editor", says="edited"),
    Signature("gimp", "GIMP", "editor name", TOOL, _p(r"\bgimp\b"), kind="editor", says="edited"),
    Signature("other_editors", "Photo editor", "editor name", TOOL,
              _p(r"\b(?:affinity photo|pixelmator|snapseed|darktable|rawtherapee|capture one|paint\.net"
                 r"|picsart|facetune|photopea|canva)\b"),
              kind="editor", says="edited"),
)

EXCERPT_CHARS = 80


def match_signatures(fields: Iterable[MetadataField], max_chars: int) -> Iterator[tuple[Signature, Signal]]:
    """Every (row, signal) where a row matches a field; patterns see the first ``max_chars`` of a value."""
    for field in fields:
        text = field.value[:max_chars]
        for row in SIGNATURES:
            if field.role not in row.roles or (row.key is not None and not row.key.fullmatch(field.key)):
                continue
            found = row.value.search(text) if row.value is not None else None
            if row.value is not None and found is None:
                continue
            yield row, Signal(kind=row.kind, says=row.says, source=field.source,
                              detail=f"{row.name}: {row.what} ({_excerpt(field, found)})")


def _excerpt(field: MetadataField, found: re.Match[str] | None) -> str:
    # A tool field is a short name worth showing whole; elsewhere only the matched words, never a whole prompt.
    if found is None:
        text = f"'{field.key}'"
    elif field.role == "tool":
        text = field.value
    else:
        text = found.group(0)
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "\u2026"
