"""Copies of a model version for tests and benchmarks that need a second version of the same bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.model_metadata import read_metadata


def copy_exported_files(model: Path, folder: Path) -> None:
    """Copy the files ``model``'s metadata lists beside it (its exported inference file, models/export.py) into
    ``folder``, so a copy of the version under another name keeps everything its file list names."""
    for entry in read_metadata(model).get("files") or []:
        if isinstance(entry, dict) and entry.get("role") != "keras":
            shutil.copyfile(model.parent / str(entry["path"]), folder / str(entry["path"]))
