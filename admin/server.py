"""The console's web server: `fakewatch admin` runs ``streamlit run admin/server.py``, which serves admin/app.py
through Streamlit's own ASGI app with admin/web.py's security headers and login-cookie route added."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.routing import Route

# `streamlit run admin/server.py` puts admin/ on sys.path, not the repository root admin.web is imported from.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from admin.web import SESSION_PATH, SecurityHeaders, session_cookie  # noqa: E402 - needs the path above

app = st.App(Path(__file__).resolve().parent / "app.py", middleware=[Middleware(SecurityHeaders)],
             routes=[Route(SESSION_PATH, session_cookie, methods=["GET"])])
