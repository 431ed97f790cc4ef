"""Stored images for the console's pages, as ``data:`` URLs: small JPEG previews for the grids (made once per image
and cached) and the originals.

Images reach the browser inside the page's own websocket session, never as files under Streamlit's public
``/media/...`` addresses, which answer anyone who has the URL, logged in or not, for as long as the server keeps
them. ``st.image`` passes a ``data:`` URL through untouched."""

from __future__ import annotations

import base64
import io

import streamlit as st

from admin.context import console_settings
from backend.settings import Settings
from backend.storage.store import image_store, read_stored
from core.decoding import decode_reduced
from core.errors import FakewatchError
from core.media import is_video
from core.video import iter_frames

THUMBNAIL_PX = 320


MIME_TYPES = {b"\xff\xd8": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif", b"BM": "image/bmp"}


def data_url(data: bytes) -> str:
    """Bytes as a ``data:`` URL (its type sniffed from the first bytes; browsers sniff the rest themselves)."""
    mime = next((kind for magic, kind in MIME_TYPES.items() if data.startswith(magic)), None)
    if mime is None:
        mime = "image/webp" if data[8:12] == b"WEBP" else "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def thumbnail(storage_key: str) -> str | None:
    """A JPEG at most THUMBNAIL_PX pixels on its long side, as a data URL; None when the stored file is gone or
    unreadable."""
    preview = _thumbnail(console_settings(), storage_key)
    return data_url(preview) if preview else None


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(settings: Settings, storage_key: str) -> bytes | None:
    try:
        data = read_stored(storage_key, image_store(settings))
        # A video's thumbnail is its first frame (decoding stops there); a large JPEG decodes at 1/8 of its size in
        # draft mode, as only the pixels a thumbnail needs are wanted.
        preview = (next(iter_frames(data, settings.video_limits)).rgb(THUMBNAIL_PX)[0] if is_video(data)
                   else decode_reduced(data, settings.image_limits, THUMBNAIL_PX))
    except (FakewatchError, OSError, StopIteration):
        return None
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def full_image(storage_key: str) -> str | None:
    """The stored original as a data URL, for browsers to show as is; None when the file is gone."""
    try:
        return data_url(read_stored(storage_key, image_store(console_settings())))
    except FakewatchError:
        return None
