"""Retraining controls on the console's Models page (issue 7 fills this in)."""

from __future__ import annotations

import streamlit as st


def render_retraining() -> None:
    st.caption("Retraining from moderators' labels is not available yet.")
