"""The project's own documents hold together: every relative link in README.md and docs/*.md reaches a file, and
its ``#anchor`` a heading there (by GitHub's slug); the README stays a front door (at most 200 lines); every
setting has its row in docs/configuration.md; nothing points to the retired shared design note."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from backend.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without code blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (word characters, hyphens and spaces
    stay), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeated headings numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        found.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return found


def broken_links(document: Path) -> list[str]:
    """The relative links of a document that reach no file, or no heading of their anchor."""
    broken = []
    for target in LINK.findall(prose(document.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, chrome:...
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Errors and codes\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[fine](other.md#errors-and-codes) [fine too](#page) `[code](nowhere.md)`\n"
                    "[gone](missing.md) [no heading](other.md#errors) ![picture](images/none.png)\n"
                    "```\n[in a code block](nowhere.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file", "other.md#errors: no heading #errors in other.md",
                                  "images/none.png: no such file"]


def test_github_slugs() -> None:
    assert github_slug("Reviews, the queue, model versions and training runs") == \
        "reviews-the-queue-model-versions-and-training-runs"
    assert github_slug("The path of a check") == "the-path-of-a-check"
    assert github_slug("`backend/...` and C2PA: what it proves") == "backend-and-c2pa-what-it-proves"
    assert github_slug("Labels: a human decision is the verdict") == "labels-a-human-decision-is-the-verdict"


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_setting_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f"FAKEWATCH_{name.upper()}" for name in Settings.model_fields
               if f"`FAKEWATCH_{name.upper()}`" not in page]
    assert missing == [], f"add these to docs/configuration.md: {missing}"


def test_nothing_points_to_the_retired_design_note() -> None:
    """The shared design note is not part of the project; the documents the code points to are in docs/."""
    retired = "DESIGN" + ".md"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    mentions = []
    for name in tracked.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.suffix not in {".png", ".jpg", ".keras", ".zip", ".pdf"}:
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            mentions += [f"{name}:{number}" for number, line in enumerate(text.splitlines(), 1) if retired in line]
    assert mentions == []


def documented_endpoints() -> set[str]:
    """``METHOD /path`` for each row of docs/api.md's endpoint table, path parameters written ``{}``; a row's
    optional part in brackets (``/api/v1/training-runs[/<id>]``) stands for both paths."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Endpoints\n", 1)[1].split("\n## ", 1)[0]
    found = set()
    for method, path in re.findall(r"^\| `([A-Z]+) (/[^`]*)` \|", section, re.MULTILINE):
        short, _, optional = path.partition("[")
        for variant in (short, short + optional.rstrip("]")) if optional else (path,):
            found.add(f"{method} {re.sub(r'<[^>]+>', '{}', variant)}")
    return found


def test_every_endpoint_the_app_serves_is_in_the_api_page(tmp_path: Path) -> None:
    from backend.api import create_app  # noqa: PLC0415 - only this test needs the app
    from testbed.stack import isolated_settings  # noqa: PLC0415

    spec = create_app(isolated_settings(data_dir=tmp_path / "var")).spec
    assert isinstance(spec, dict)
    served = {f"{method.upper()} {re.sub(r'{[^}]+}', '{}', path)}"
              for path, operations in spec["paths"].items() for method in operations}
    assert documented_endpoints() == served
