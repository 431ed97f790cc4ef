"""The console's login gate. A user logs in once per browser session; every page asks ``require_user`` first, so no
page renders (or writes a review) for someone who has not logged in.

Logging in goes through backend/logins.py (a growing delay after failures, then a lockout, per name and per
address; each attempt an audit event). The logged-in user is read back from the database on each run
(``current_actor``), so a revoked user is logged out at their next click and a changed role applies at once.
What a role may do is backend/access.py's rule: pages ask ``allowed(Permission.X)`` to hide a control, and the
services refuse it anyway."""

from __future__ import annotations

import streamlit as st

from admin.context import console_settings, session_scope
from backend.access import Actor, may
from backend.logins import log_in
from backend.schema import User
from core.enums import Permission
from core.errors import FakewatchError

USER_KEY = "moderator"
USER_ID_KEY = "console_user_id"


def current_actor() -> Actor | None:
    """The logged-in user as an Actor (None: nobody, or a user revoked since they logged in)."""
    user_id = st.session_state.get(USER_ID_KEY)
    if user_id is None:
        return None
    with session_scope() as session:
        user = session.get(User, user_id)
        actor = Actor.of_user(user) if user is not None and user.is_active else None
    if actor is None:
        log_out()
    return actor


def current_user() -> str | None:
    """The logged-in user's name (what their reviews record)."""
    actor = current_actor()
    return actor.name if actor else None


def allowed(permission: Permission) -> bool:
    """Whether the logged-in user's role may do this: the console shows only the controls that answer yes."""
    actor = current_actor()
    return actor is not None and may(actor.role, permission)


def require_user() -> str:
    """The logged-in user's name; shows the login form and stops the page when nobody is logged in."""
    user = current_user()
    if user is None:
        render_login()
        st.stop()
    return user


def require_permission(permission: Permission) -> Actor:
    """The logged-in user, when their role may do this; otherwise the page says so and stops."""
    require_user()
    actor = current_actor()
    if actor is None or not may(actor.role, permission):
        st.error("Your role may not open this page.")
        st.stop()
    return actor


def client_address() -> str | None:
    """The browser's address as Streamlit sees it (None from localhost), which the login limiter counts by."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # AppTest has no real connection


def render_login() -> None:
    st.title("fakewatch console")
    with st.form("login"):
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            with session_scope() as session:
                user = log_in(session, console_settings(), name, password, client_address())
                st.session_state[USER_ID_KEY], st.session_state[USER_KEY] = user.id, user.name
        except FakewatchError as error:
            st.error(error.message)
            return
        st.rerun()
    st.caption("Users are created with `fakewatch users create NAME --role viewer|moderator|admin`; `fakewatch up` "
               "prints the first password (user admin) on its first run.")


def log_out() -> None:
    st.session_state.pop(USER_KEY, None)
    st.session_state.pop(USER_ID_KEY, None)


def render_logout() -> None:
    actor = current_actor()
    if actor is None:
        return
    with st.sidebar:
        st.caption(f"Logged in as **{actor.name}** ({actor.role})")
        if st.button("Log out", key="logout"):
            log_out()
            st.rerun()
