"""A notice that survives one rerun: an action (an on_click callback, or code about to call st.rerun) flashes it,
and the page shows it once, where it calls show_flash, on its next run. An action far down a page names its
``place`` and the page shows that notice beside the action's control: a refusal shown at the page's top would be
off-screen where the button was pressed."""

from __future__ import annotations

from typing import Literal

import streamlit as st

NoticeKind = Literal["success", "info", "warning", "error"]

FLASH_KEY = "flash"


def flash(kind: NoticeKind, text: str, place: str = "") -> None:
    st.session_state[FLASH_KEY + place] = (kind, text)


def show_flash(place: str = "") -> None:
    notice: tuple[NoticeKind, str] | None = st.session_state.pop(FLASH_KEY + place, None)
    if notice:
        kind, text = notice
        {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}[kind](text)
