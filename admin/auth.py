"""The console's login gate. A login lasts across reloads and tabs for FAKEWATCH_CONSOLE_SESSION_HOURS (12 by
default): its token lives in an HttpOnly cookie that the server sets (admin/web.py; backend/identity/sessions.py
checks it on every new browser session) until it expires or the user logs out. Every page asks ``require_user``
first, so no page renders (or writes a review) for someone who has not logged in.

Logging in goes through backend/identity/logins.py (a growing delay after failures, then a lockout, per name and per
address; each attempt an audit event). The logged-in user is read back from the database on each run
(``current_actor``), so a revoked user is logged out at their next click and a changed role applies at once.
What a role may do is backend/identity/access.py's rule: pages ask ``allowed(Permission.X)`` to hide a control, and the
services refuse it anyway."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import select

from admin.context import console_settings, session_scope
from admin.web import COOKIE, TICKETS, ticket_address
from backend.identity.access import Actor, may
from backend.identity.logins import log_in
from backend.identity.sessions import console_session_user, end_console_session, start_console_session
from backend.storage.schema import User
from core.enums import Permission
from core.errors import FakewatchError

USER_KEY = "moderator"
USER_ID_KEY = "console_user_id"
TOKEN_KEY = "console_token"
COOKIE_PENDING_KEY = "console_cookie_pending"  # the cookie to write on the next run: (token, max_age_s)


def current_actor() -> Actor | None:
    """The logged-in user as an Actor (None: nobody, or a user revoked since they logged in)."""
    user_id = st.session_state.get(USER_ID_KEY)
    if user_id is None:
        user_id = _user_id_from_cookie()
        if user_id is None:
            return None
    with session_scope() as session:
        user = session.get(User, user_id)
        actor = Actor.of_user(user) if user is not None and user.is_active else None
    if actor is None:
        log_out()
    return actor


def _user_id_from_cookie() -> int | None:
    """A new browser session (a reload, another tab) that carries a live login cookie is logged in."""
    try:
        token = st.context.cookies.get(COOKIE)
    except RuntimeError:  # no Streamlit runtime behind this run (AppTest, bare mode): no cookies to read
        return None
    if not isinstance(token, str) or not token:
        return None
    with session_scope() as session:
        name = console_session_user(session, token)
        user_id = session.scalar(select(User.id).where(User.name == name)) if name is not None else None
    if user_id is not None:
        st.session_state[USER_ID_KEY], st.session_state[USER_KEY] = user_id, name
        st.session_state[TOKEN_KEY] = token
    return user_id


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


LOCALHOST = "localhost"


def client_address() -> str | None:
    """The browser's address, which the login limiter counts by and the audit trail records. Streamlit names no
    address for a connection from this machine (127.0.0.1 or ::1): that one is recorded as "localhost". None only
    where no browser is connected (AppTest)."""
    address = st.context.ip_address
    if isinstance(address, str):
        return address
    return LOCALHOST if st.context.headers else None


def render_login() -> None:
    st.title("fakewatch console")
    with st.form("login"):
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        hours = console_settings().console_session_hours
        try:
            with session_scope() as session:
                user = log_in(session, console_settings(), name, password, client_address())
                token = start_console_session(session, user.name, hours)
                st.session_state[USER_ID_KEY], st.session_state[USER_KEY] = user.id, user.name
        except FakewatchError as error:
            st.error(error.message)
            return
        st.session_state[TOKEN_KEY] = token
        st.session_state[COOKIE_PENDING_KEY] = (token, int(hours * 3600))
        st.rerun()
    st.caption("Users are created with `fakewatch users create NAME --role viewer|moderator|admin`; `fakewatch up` "
               "prints the first password (user admin) on its first run.")


def _write_cookie(value: str, max_age_s: int) -> None:
    """Have the server set (or, with max_age_s 0, delete) the HttpOnly login cookie: the browser fetches a one-time
    pixel whose answer carries it (admin/web.py says why it takes an image)."""
    st.markdown(f"![]({ticket_address(TICKETS.issue(value, max_age_s))})")


def log_out() -> None:
    with session_scope() as session:
        end_console_session(session, st.session_state.get(TOKEN_KEY))
    st.session_state.pop(USER_KEY, None)
    st.session_state.pop(USER_ID_KEY, None)
    st.session_state.pop(TOKEN_KEY, None)
    st.session_state[COOKIE_PENDING_KEY] = ("", 0)


def write_pending_cookie() -> None:
    pending = st.session_state.pop(COOKIE_PENDING_KEY, None)
    if pending is not None:
        _write_cookie(*pending)


def render_logout() -> None:
    actor = current_actor()
    if actor is None:
        return
    with st.sidebar:
        write_pending_cookie()
        st.caption(f"Logged in as **{actor.name}** ({actor.role})")
        if st.button("Log out", key="logout"):
            log_out()
            st.rerun()
