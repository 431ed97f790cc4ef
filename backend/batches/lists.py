"""Reading a submitted list of image URLs: JSON ``{"urls": [...]}``, text with one URL per line, a CSV with a
``url`` column, or an uploaded file of either kind; then keeping the syntactically valid http(s) URLs in order,
folding duplicates and reporting every other line by its number."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.fetching.fetcher import validate_url
from core.errors import FakewatchError, Unparseable

# The invalid lines reported back are capped so a file of garbage cannot bloat the batch row.
MAX_INVALID_REPORTED = 1000


@dataclass
class Entry:
    """One line of the submitted list: its 1-based line number and its raw value."""

    line: int
    value: str


@dataclass
class ParsedList:
    urls: list[str] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


def entries_from_json(body: Any) -> tuple[list[Entry], str]:
    """``{"urls": [...], "name": ...}``: each URL's line is its 1-based position in the list."""
    if body is None:
        raise Unparseable('The body is not JSON; send JSON like {"urls": ["https://example.com/a.jpg"]}.')
    if not isinstance(body, dict) or not isinstance(body.get("urls"), list):
        raise FakewatchError("invalid_request",
                             'Send JSON like {"urls": ["https://example.com/a.jpg"], "name": "crawl"}.')
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise FakewatchError("invalid_request", "name must be text.")
    return [Entry(index, value if isinstance(value, str) else json.dumps(value))
            for index, value in enumerate(body["urls"], start=1)], name or ""


def entries_from_text(text: str) -> list[Entry]:
    """One URL per line; blank lines and ``#`` comments are skipped but still counted for line numbers."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if value and not value.startswith("#"):
            entries.append(Entry(number, value))
    return entries


def entries_from_csv(text: str) -> list[Entry]:
    """The ``url`` column of a CSV with a header row; line numbers are the file's (the header is line 1)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise Unparseable("The CSV file is empty or unreadable.") from error
    columns = [column.strip().lower() for column in header]
    if "url" not in columns:
        raise FakewatchError("invalid_request",
                             f"The CSV file needs a `url` column; its header has {', '.join(header) or 'nothing'}.")
    position = columns.index("url")
    entries = []
    try:
        for row in reader:
            value = row[position].strip() if position < len(row) else ""
            if value:
                entries.append(Entry(reader.line_num, value))
    except csv.Error as error:
        raise Unparseable(f"The CSV file is malformed near line {reader.line_num}: {error}.") from error
    return entries


def entries_from_file(data: bytes, filename: str, mimetype: str | None = None) -> list[Entry]:
    """An uploaded list: a CSV with a `url` column (a ``.csv`` name or a text/csv type), else one URL per line."""
    text = decode_text(data)
    is_csv = filename.lower().endswith(".csv") or mimetype == "text/csv"
    return entries_from_csv(text) if is_csv else entries_from_text(text)


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Unparseable(f"The list is not UTF-8 text (byte {error.start}).") from error


def validate_entries(entries: Sequence[Entry], max_urls: int) -> ParsedList:
    """Keep syntactically valid http(s) URLs in order, fold duplicates, and report the rest by line.

    The size limit counts distinct valid URLs (the items); the request's byte cap bounds everything else."""
    parsed = ParsedList()
    seen: set[str] = set()
    for entry in entries:
        try:
            url = validate_url(entry.value)
        except FakewatchError as error:
            if len(parsed.invalid) < MAX_INVALID_REPORTED:
                parsed.invalid.append({"line": entry.line, "value": entry.value[:300], "reason": error.message})
            continue
        if url in seen:
            parsed.duplicates += 1
            continue
        seen.add(url)
        parsed.urls.append(url)
    if len(parsed.urls) > max_urls:
        raise FakewatchError("too_large", f"The list has {len(parsed.urls)} distinct URLs; a batch takes at most "
                                          f"{max_urls}. Split it into several batches.", 413)
    if not parsed.urls:
        raise FakewatchError("invalid_request",
                             "The list holds no valid http(s) URL. " + _describe_invalid(parsed.invalid))
    return parsed


def _describe_invalid(invalid: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"line {item['line']}: {item['reason']}" for item in invalid[:3])
    more = f" (and {len(invalid) - 3} more)" if len(invalid) > 3 else ""
    return shown + more
