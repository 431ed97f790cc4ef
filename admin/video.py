"""A video's page in the console: the clip, a timeline of its sampled frames' scores with the model's uncertain band
shaded, the frames as thumbnails, and the frame a moderator picks shown large with its heat map. A review on the
page labels the whole video (its bytes), as for a still."""

from __future__ import annotations

import io
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from admin.context import console_settings
from admin.heatmap import heatmap_png
from admin.thumbnails import data_url
from backend.settings import Settings
from backend.storage.schema import Check
from backend.storage.store import image_store, read_stored
from core.errors import FakewatchError
from core.video import MIME_TYPES, sample_video

THUMB_PX = 160
FRAME_PX = 960
COLUMNS = 8


@st.cache_data(max_entries=50, show_spinner="Decoding the clip…")
def sampled_frames(settings: Settings, storage_key: str) -> dict[float, bytes]:
    """The clip's sampled frames (the worker's sampling, so the same times) as PNGs at most FRAME_PX wide."""
    data = read_stored(storage_key, image_store(settings))
    video = sample_video(data, settings.video_limits, settings.video_sampling)
    frames = {}
    for frame in video.frames:
        picture = frame.image.copy()
        picture.thumbnail((FRAME_PX, FRAME_PX))
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        frames[frame.time_s] = buffer.getvalue()
    return frames


def band_limits(threshold: float, band: float) -> tuple[float, float]:
    """Where rule 5 reads uncertain: from min(t - b, 0.5) up to max(t + b, 0.5)."""
    return min(threshold - band, 0.5), max(threshold + band, 0.5)


def timeline_chart(frames: list[dict[str, Any]], threshold: float, band: float) -> alt.LayerChart | alt.FacetChart:
    low, high = band_limits(threshold, band)
    scores = pd.DataFrame([{"time (s)": f["time_s"], "P(fake)": f["score"], "verdict": f["verdict"]} for f in frames])
    shaded = alt.Chart(pd.DataFrame([{"low": low, "high": high}])).mark_rect(opacity=0.18, color="#f0a500").encode(
        y=alt.Y("low:Q", scale=alt.Scale(domain=[0, 1])), y2="high:Q")
    line = alt.Chart(scores).mark_line(color="#555").encode(x="time (s):Q", y=alt.Y("P(fake):Q",
                                                                                       scale=alt.Scale(domain=[0, 1])))
    points = alt.Chart(scores).mark_circle(size=70).encode(
        x="time (s):Q", y="P(fake):Q", tooltip=["time (s)", "P(fake)", "verdict"],
        color=alt.Color("verdict:N", scale=alt.Scale(domain=["real", "uncertain", "fake"],
                                                     range=["#2b83ba", "#f0a500", "#d7191c"])))
    return alt.layer(shaded, line, points).properties(height=220)


def render_video(image: Any, checks: list[Check]) -> None:
    """The clip and its newest scored check's timeline; the picked frame with its heat map."""
    settings = console_settings()
    try:
        data = read_stored(image.storage_key, image_store(settings))
    except FakewatchError:
        st.warning("The stored video file is missing.")
        return
    if image.format in MIME_TYPES:
        st.video(data, format=MIME_TYPES[image.format])
    else:  # an animation plays as an image
        st.image(data_url(data), width="stretch")
    scored = next((check for check in checks if check.frames), None)
    if scored is None or scored.model_version is None:
        st.caption("No check of this video has been scored yet.")
        return
    frames = scored.frames or []
    st.subheader("Timeline")
    st.caption(f"{len(frames)} frames scored over {image.duration_s or 0:.1f} s; the shaded band is where the model "
               "reads uncertain. The clip's score is the mean of the top quarter of its frames' scores.")
    st.altair_chart(timeline_chart(frames, scored.model_version.threshold, scored.model_version.band),
                    width="stretch")
    render_frames(settings, image, frames)


def render_frames(settings: Settings, image: Any, frames: list[dict[str, Any]]) -> None:
    try:
        pictures = sampled_frames(settings, image.storage_key)
    except FakewatchError as error:
        st.warning(f"The frames could not be decoded: {error.message}")
        return
    for start in range(0, len(frames), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, frame in zip(columns, frames[start : start + COLUMNS], strict=False):
            png = pictures.get(frame["time_s"])
            if png is not None:
                column.image(_thumbnail(png), width="stretch")
            column.button(f"{frame['time_s']:.1f} s · {frame['score']:.2f}", key=f"frame_{frame['time_s']}",
                          wrap=True, on_click=_pick, args=(frame["time_s"],), width="stretch")
    picked = st.session_state.get("video_frame")
    chosen = next((frame for frame in frames if frame["time_s"] == picked), None)
    if chosen is None or chosen["time_s"] not in pictures:
        st.caption("Click a frame for its heat map.")
        return
    picture = Image.open(io.BytesIO(pictures[chosen["time_s"]])).convert("RGB")
    # Regions are in the clip's pixels: lay them on the frame at that size.
    full = picture.resize((image.width, image.height))
    st.subheader(f"Frame at {chosen['time_s']:.1f} s: {chosen['verdict']}, P(fake) {chosen['score']:.2f}")
    shown = heatmap_png(full, chosen["regions"]) if chosen["regions"] else pictures[chosen["time_s"]]
    st.image(data_url(shown), width="stretch")


def _pick(time_s: float) -> None:
    st.session_state["video_frame"] = time_s


def _thumbnail(png: bytes) -> str:
    picture = Image.open(io.BytesIO(png))
    picture.thumbnail((THUMB_PX, THUMB_PX))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=80)
    return data_url(buffer.getvalue())
