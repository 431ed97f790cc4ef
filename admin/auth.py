"""The console's login gate. A login lasts across reloads and tabs for FAKEWATCH_CONSOLE_SESSION_HOURS (12 by
default): its token lives in a cookie (backend/console_sessions.py checks it on every new browser session) until
it expires or the moderator logs out. Every page asks ``require_user`` first, so no page renders (or writes a
review) for someone who has not logged in."""

from __future__ import annotations

import json

import streamlit as st

from admin.context import console_settings, session_scope
from backend.console_sessions import console_session_user, end_console_session, start_console_session
from backend.users import authenticate
from core.errors import FakewatchError

USER_KEY = "moderator"
TOKEN_KEY = "console_token"
COOKIE_PENDING_KEY = "console_cookie_pending"  # the cookie to write on the next run: (token, max_age_s)
COOKIE = "fakewatch_console"


def current_user() -> str | None:
    user = st.session_state.get(USER_KEY)
    if user:
        return str(user)
    return _user_from_cookie()


def _user_from_cookie() -> str | None:
    """A new browser session (a reload, another tab) that carries a live login cookie is logged in."""
    try:
        token = st.context.cookies.get(COOKIE)
    except Exception:  # no browser behind this run (AppTest, bare mode): no cookies to read
        return None
    if not isinstance(token, str) or not token:
        return None
    with session_scope() as session:
        user = console_session_user(session, token)
    if user is not None:
        st.session_state[USER_KEY] = user
        st.session_state[TOKEN_KEY] = token
    return user


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
        submitted = st.form_submit_button("Log in")
    if submitted:
        hours = console_settings().console_session_hours
        try:
            with session_scope() as session:
                user = authenticate(session, name, password).name
                token = start_console_session(session, user, hours)
        except FakewatchError as error:
            st.error(error.message)
            return
        st.session_state[USER_KEY] = user
        st.session_state[TOKEN_KEY] = token
        st.session_state[COOKIE_PENDING_KEY] = (token, int(hours * 3600))
        st.rerun()
    st.caption("Moderators are created with `fakewatch users create NAME`; `fakewatch up` prints the first "
               "password (user admin) on its first run.")


def _write_cookie(value: str, max_age_s: int) -> None:
    """Set (or, with max_age_s 0, delete) the login cookie in the browser; Streamlit has no API that does."""
    st.html(f"<script>document.cookie = {json.dumps(COOKIE)} + '=' + {json.dumps(value)} + "
            f"'; path=/; max-age={int(max_age_s)}; SameSite=Strict';</script>", unsafe_allow_javascript=True)


def log_out() -> None:
    with session_scope() as session:
        end_console_session(session, st.session_state.get(TOKEN_KEY))
    st.session_state.pop(USER_KEY, None)
    st.session_state.pop(TOKEN_KEY, None)
    st.session_state[COOKIE_PENDING_KEY] = ("", 0)


def write_pending_cookie() -> None:
    pending = st.session_state.pop(COOKIE_PENDING_KEY, None)
    if pending is not None:
        _write_cookie(*pending)


def render_logout() -> None:
    with st.sidebar:
        write_pending_cookie()
        st.caption(f"Logged in as **{current_user()}**")
        if st.button("Log out", key="logout"):
            log_out()
            st.rerun()
