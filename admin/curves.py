"""Training curves, loss and accuracy with train beside valid per epoch, for a registered version (the Models
page) and for a run in progress (the retraining section)."""

from __future__ import annotations

import altair as alt
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


def curve_chart(frame: pd.DataFrame, metric: str) -> alt.Chart | None:
    """Lines with a point on every epoch (so a one-epoch run shows its point, not an empty chart), on an x axis of
    whole epochs."""
    keys = [key for key in (metric, f"val_{metric}") if key in frame]
    if not keys:
        return None
    long = (frame[keys].rename(columns={metric: "train", f"val_{metric}": "valid"})
            .reset_index(names="epoch").melt("epoch", var_name="split", value_name=metric).dropna())
    epochs = [int(epoch) for epoch in frame.index]
    x_axis = alt.Axis(format="d", values=epochs if len(epochs) <= 20 else alt.Undefined, tickMinStep=1)
    return (alt.Chart(long).mark_line(point=True)
            .encode(x=alt.X("epoch:Q", axis=x_axis, scale=alt.Scale(domain=[min(epochs) - 0.5, max(epochs) + 0.5])
                            if len(epochs) == 1 else alt.Undefined, title="epoch"),
                    y=alt.Y(f"{metric}:Q", title=metric), color=alt.Color("split:N", title=None),
                    tooltip=["epoch", "split", metric])
            .properties(height=240))


def render_curves(frame: pd.DataFrame) -> None:
    for metric, column in zip(CURVE_METRICS, st.columns(len(CURVE_METRICS)), strict=True):
        chart = curve_chart(frame, metric)
        if chart is not None:
            column.markdown(f"**{metric}**")
            column.altair_chart(chart, width="stretch")
