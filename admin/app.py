"""The admin console's one entry point: `streamlit run admin/app.py` (or `fakewatch admin`).

Every page is registered with st.navigation on every run, so a page URL such as ``/image?sha256=...`` keeps its
place while the visitor logs in; until then only the login form runs.

The pages live in admin/views/, not admin/pages/: Streamlit treats a ``pages/`` folder beside the entry point as
a legacy multipage app and, until st.navigation has run once in the process, runs those files directly,
without this entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run admin/app.py` puts admin/ on sys.path, not the repository root the backend imports need.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from admin.auth import (  # noqa: E402 - needs the path above
    allowed,
    current_user,
    render_login,
    render_logout,
    write_pending_cookie,
)
from core.enums import Permission  # noqa: E402

QUEUE_PAGE = st.Page("views/queue.py", title="Review queue", icon=":material/fact_check:", url_path="queue")


def open_queue() -> None:
    st.switch_page(QUEUE_PAGE)


# Streamlit serves its default page at the root and nowhere else, so a default page of its own would lose its
# path: /queue (and so /queue?batch=ID) answered "Page not found". The root is this hidden page, which opens the
# queue at /queue; every page keeps the path it is registered with.
START_PAGE = st.Page(open_queue, title="Review queue", url_path="start", default=True, visibility="hidden")
PAGES = [
    QUEUE_PAGE,
    st.Page("views/image.py", title="Image", icon=":material/image:", url_path="image"),
    st.Page("views/batches.py", title="Batches", icon=":material/list:", url_path="batches"),
    st.Page("views/dashboard.py", title="Dashboard", icon=":material/monitoring:", url_path="dashboard"),
    st.Page("views/models.py", title="Models", icon=":material/model_training:", url_path="models"),
]
AUDIT_PAGE = st.Page("views/audit.py", title="Audit", icon=":material/history:", url_path="audit")

# An emoji: the browser draws it as the tab icon; a :material: icon would be fetched from fonts.gstatic.com.
st.set_page_config(page_title="fakewatch console", page_icon="🛡️", layout="wide")
logged_in = current_user() is not None
# Before logging in every page is registered (a link keeps its place); after, only those the role may open.
shown = [START_PAGE, *PAGES, AUDIT_PAGE] if not logged_in or allowed(Permission.READ_AUDIT) else [START_PAGE, *PAGES]
navigation = st.navigation(shown, position="sidebar" if logged_in else "hidden")
if not logged_in:
    write_pending_cookie()  # a logout's cookie deletion, written on the login form's run
    render_login()
    st.stop()
render_logout()
navigation.run()
