"""What the console's web server adds to Streamlit's (admin/server.py mounts both): security headers on every HTTP
response, and the login cookie issued by the server.

Streamlit has no setting for response headers, but it serves its app as an ASGI app (``st.App``) that takes
middleware and routes, so the console runs as one process, with no proxy in front.

The login cookie: a login happens inside the page's websocket, which cannot set a cookie, and a cookie written
by page JavaScript is one that scripts can read. So the page that logged in asks the server for its cookie by a
one-time ticket: the login stores the session token under a random ticket (in this process, for a minute, usable
once) and shows a 1-pixel image whose address carries the ticket; the server's answer to that image sets the
cookie HttpOnly, SameSite=Strict, and Secure when the console is reached over HTTPS (directly, or through a
proxy that says so in X-Forwarded-Proto). Logging out deletes the cookie the same way."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "fakewatch_console"
SESSION_PATH = "/console-session"  # the route that answers the ticket's image
TICKET_TTL_S = 60.0
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def _inline_script_hashes() -> list[str]:
    """CSP hashes of the inline scripts in Streamlit's own index.html (one line that sets ``prerenderReady``), so
    the policy allows exactly those and no other inline script."""
    index = Path(streamlit.__file__).parent / "static" / "index.html"
    scripts = re.findall(r"<script>(.*?)</script>", index.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts]


def content_security_policy() -> str:
    """Scripts only from the console itself; images as data: URLs (previews travel inside the websocket); the
    websocket to the same host; no framing by any other page (clickjacking), no plugins, forms post only here.
    The grid compiles WebAssembly ('wasm-unsafe-eval': no JavaScript eval); Streamlit styles its elements inline,
    hence style-src 'unsafe-inline'."""
    return "; ".join([
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval' " + " ".join(_inline_script_hashes()),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "worker-src 'self' blob:",
        "frame-src 'self' blob: data:",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    ])


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(),
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (pages, scripts, health, media); websockets pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = security_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class PendingCookie:
    value: str  # the console session's token; "" deletes the cookie
    max_age_s: int
    expires_at: float


class CookieTickets:
    """One-time tickets for the cookie the next image request sets; this process only, as Streamlit's sessions are."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, PendingCookie] = {}

    def issue(self, value: str, max_age_s: int) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._pending = {key: cookie for key, cookie in self._pending.items() if cookie.expires_at > now}
            self._pending[ticket] = PendingCookie(value, max_age_s, now + TICKET_TTL_S)
        return ticket

    def redeem(self, ticket: str) -> PendingCookie | None:
        with self._lock:
            cookie = self._pending.pop(ticket, None)
        return cookie if cookie is not None and cookie.expires_at > time.monotonic() else None


TICKETS = CookieTickets()


def ticket_address(ticket: str) -> str:
    """The (relative) address of the image that redeems ``ticket``."""
    return f"{SESSION_PATH}?ticket={ticket}"


def _over_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


async def session_cookie(request: Request) -> Response:
    """GET /console-session?ticket=T: a transparent pixel that sets (or deletes) the login cookie T stands for;
    404 for an unknown, used or expired ticket."""
    cookie = TICKETS.redeem(request.query_params.get("ticket", ""))
    if cookie is None:
        return Response(status_code=404, headers={"Cache-Control": "no-store"})
    response = Response(PIXEL, media_type="image/png", headers={"Cache-Control": "no-store"})
    response.set_cookie(COOKIE, cookie.value, max_age=cookie.max_age_s, path="/", secure=_over_https(request),
                        httponly=True, samesite="strict")
    return response
