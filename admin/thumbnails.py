"""Small JPEG previews of stored images for the console's grids, made once per image and cached."""

from __future__ import annotations

import io

import streamlit as st

from admin.context import console_settings
from backend.settings import Settings
from backend.store import read_stored
from core.decoding import decode_image
from core.errors import FakewatchError

THUMBNAIL_PX = 320


def thumbnail(storage_key: str) -> bytes | None:
    """A JPEG at most THUMBNAIL_PX pixels on its long side; None when the stored file is gone or unreadable."""
    return _thumbnail(console_settings(), storage_key)


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(settings: Settings, storage_key: str) -> bytes | None:
    try:
        preview = decode_image(read_stored(storage_key, settings.images_dir), settings.image_limits)
    except (FakewatchError, OSError):
        return None
    preview.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def full_image(storage_key: str) -> bytes | None:
    """The stored original, for browsers to show as is; None when the file is gone."""
    try:
        return read_stored(storage_key, console_settings().images_dir)
    except FakewatchError:
        return None
