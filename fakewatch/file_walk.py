"""The files a command given paths works on: files as given, folders walked. One home, so ``fakewatch score``
(local) and ``fakewatch check`` (through the API) read the same folder as the same files in the same order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path


def walk_files(paths: Iterable[str]) -> Iterator[Path]:
    """Files as given, and every file under given folders in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path
