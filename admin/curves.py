"""Training curves, loss and accuracy with train beside valid per epoch, for a registered version (the Models
page) and for a run in progress (the retraining section)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

CURVE_METRICS = ("loss", "accuracy")


def history_frame(history: dict[str, list[float]] | list[dict[str, float]]) -> pd.DataFrame:
    """One row per epoch (numbered from 1), from a version's metadata (Keras's History.history: one list per
    metric) or from a run's progress (one dict per epoch, with its number)."""
    if isinstance(history, dict):
        frame = pd.DataFrame({key: pd.Series(values, dtype=float) for key, values in history.items()})
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
        return frame
    return pd.DataFrame(history).set_index("epoch")


def render_curves(frame: pd.DataFrame) -> None:
    for metric, column in zip(CURVE_METRICS, st.columns(len(CURVE_METRICS)), strict=True):
        keys = [key for key in (metric, f"val_{metric}") if key in frame]
        if keys:
            column.markdown(f"**{metric}**")
            column.line_chart(frame[keys].rename(columns={metric: "train", f"val_{metric}": "valid"}), height=240)
