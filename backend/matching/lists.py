"""Hash lists: the CSV of PDQ hashes with moderators' labels that teams share, as HMA's hash banks do.

    pdq_hex,label,note
    f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,fake,face swap of a news photo

The header is optional (without one the columns are taken in that order; with one they may come in any order and
other columns are ignored). Labels are ``fake`` or ``real``; an empty label takes the one the importer gives.
Reading never stops at a bad row: each is reported with its line number, as batch URL lists are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TextIO

from backend.matching.pdq import normalize_hex

COLUMNS = ("pdq_hex", "label", "note")
LABELS = ("fake", "real")
MAX_NOTE_CHARS = 500
# The bad rows reported back are capped, so a file of garbage cannot bloat a response; all are counted.
MAX_INVALID_REPORTED = 1000


@dataclass(frozen=True)
class HashListEntry:
    pdq_hex: str
    label: str
    note: str = ""


@dataclass(frozen=True)
class InvalidRow:
    """A row left out: its 1-based line in the file, the offending value, and why (as a batch's ``invalid``)."""

    line: int
    value: str
    reason: str

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


@dataclass
class HashList:
    entries: list[HashListEntry] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    invalid_count: int = 0

    def reject(self, line: int, value: str, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_INVALID_REPORTED:
            self.invalid.append(InvalidRow(line, value[:300], reason))


def parse_hash_list(text: str, *, label: str | None = None) -> HashList:
    """Read a hash list. ``label`` (fake or real) is given to rows whose label is empty; without it such rows are
    invalid. A hash listed twice keeps its first row. Raises ValueError only when the file is not CSV at all."""
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    parsed = HashList()
    positions: dict[str, int] | None = None
    first_line: dict[str, int] = {}  # hash -> its entry's position
    earlier_line: dict[str, int] = {}  # hash -> its line in the file
    try:
        while True:
            line = reader.line_num + 1  # where this row starts, even if a quoted note runs over lines
            row = next(reader, None)
            if row is None:
                break
            if not any(cell.strip() for cell in row):
                continue
            if positions is None:
                positions = _header_positions(row)
                if positions is not None:
                    continue
                positions = {name: index for index, name in enumerate(COLUMNS)}
            entry = _read_row(row, positions, label, line, parsed)
            if entry is None:
                continue
            if entry.pdq_hex in first_line:
                earlier = parsed.entries[first_line[entry.pdq_hex]]
                parsed.reject(line, entry.pdq_hex, f"the same hash is on line {earlier_line[entry.pdq_hex]}"
                              + ("" if earlier.label == entry.label else f", labelled {earlier.label}"))
                continue
            first_line[entry.pdq_hex] = len(parsed.entries)
            earlier_line[entry.pdq_hex] = line
            parsed.entries.append(entry)
    except csv.Error as error:
        raise ValueError(f"The hash list is not valid CSV near line {reader.line_num}: {error}.") from error
    return parsed


def write_hash_list(entries: Iterable[HashListEntry], out: TextIO) -> int:
    """Write a hash list with its header; returns how many rows were written. ``out`` is opened with
    ``newline=""``, as the csv module asks."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for entry in entries:
        writer.writerow((entry.pdq_hex, entry.label, entry.note))
        count += 1
    return count


def _header_positions(row: list[str]) -> dict[str, int] | None:
    """The columns named by a header row, or None when the row is data."""
    names = [cell.strip().lower() for cell in row]
    if "pdq_hex" not in names:
        return None
    return {name: names.index(name) for name in COLUMNS if name in names}


def _read_row(row: list[str], positions: dict[str, int], default_label: str | None, line: int,
              parsed: HashList) -> HashListEntry | None:
    def cell(name: str) -> str:
        position = positions.get(name)
        return row[position].strip() if position is not None and position < len(row) else ""

    raw_hex = cell("pdq_hex")
    try:
        pdq_hex = normalize_hex(raw_hex)
    except ValueError:
        parsed.reject(line, raw_hex, _hex_problem(raw_hex))
        return None
    label = cell("label").lower() or default_label
    if label is None:
        parsed.reject(line, raw_hex, "no label: give fake or real in the label column, or a label for the whole list")
        return None
    if label not in LABELS:
        parsed.reject(line, cell("label"), f"unknown label {cell('label')!r}: use fake or real")
        return None
    note = cell("note")
    if len(note) > MAX_NOTE_CHARS:
        parsed.reject(line, note, f"the note is {len(note)} characters long; at most {MAX_NOTE_CHARS} are kept")
        return None
    return HashListEntry(pdq_hex, label, note)


def _hex_problem(value: str) -> str:
    if not value:
        return "no PDQ hash in the pdq_hex column"
    if any(c not in "0123456789abcdefABCDEF" for c in value):
        return "a PDQ hash is written in hex digits (0-9, a-f) only"
    return f"a PDQ hash has 64 hex digits; this one has {len(value)}"
