"""How the console's tables show what is missing: a dash, never Python's ``None`` (Streamlit's grid prints "None"
for a missing cell)."""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd

MISSING = "—"


def cell_text(value: object) -> str:
    """One cell as text: a dash when missing, a date to the minute, a fraction to three places."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def dash_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column that has a missing cell turned to text, that cell a dash. Columns without one
    keep their type (and so the grid's number and date formats)."""
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].isna().any():
            shown[column] = [cell_text(value) for value in shown[column]]
    return shown
