"""The console's login gate. A moderator logs in once per browser session; every page asks ``require_user``
first, so no page renders (or writes a review) for someone who has not logged in."""

from __future__ import annotations

import streamlit as st

from admin.context import session_scope
from backend.users import authenticate
from core.errors import FakewatchError

USER_KEY = "moderator"


def current_user() -> str | None:
    user = st.session_state.get(USER_KEY)
    return str(user) if user else None


def require_user() -> str:
    """The logged-in moderator's name; shows the login form and stops the page when nobody is logged in."""
    user = current_user()
    if user is None:
        render_login()
        st.stop()
    return user


def render_login() -> None:
    st.title("fakewatch console")
    with st.form("login"):
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            with session_scope() as session:
                st.session_state[USER_KEY] = authenticate(session, name, password).name
        except FakewatchError as error:
            st.error(error.message)
            return
        st.rerun()
    st.caption("Moderators are created with `fakewatch users create NAME`; `fakewatch up` prints the first "
               "password (user admin) on its first run.")


def render_logout() -> None:
    with st.sidebar:
        st.caption(f"Logged in as **{current_user()}**")
        if st.button("Log out", key="logout"):
            st.session_state.pop(USER_KEY, None)
            st.rerun()
