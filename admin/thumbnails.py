"""Small JPEG previews of stored images for the console's grids, made once per image and cached."""

from __future__ import annotations

import io

import streamlit as st

from backend.errors import FakewatchError
from backend.intake import decode_image
from backend.store import read_image

THUMBNAIL_PX = 320


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(storage_key: str) -> bytes | None:
    """A JPEG at most THUMBNAIL_PX pixels on its long side; None when the stored file is gone or unreadable."""
    try:
        preview = decode_image(read_image(storage_key))
    except (FakewatchError, OSError):
        return None
    preview.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def full_image(storage_key: str) -> bytes | None:
    """The stored original, for browsers to show as is; None when the file is gone."""
    try:
        return read_image(storage_key)
    except FakewatchError:
        return None
