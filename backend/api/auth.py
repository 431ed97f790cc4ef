"""API-key authentication and per-key rate limits."""

from __future__ import annotations

import threading

from apiflask import HTTPTokenAuth
from flask import g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage

from backend.api.context import db
from backend.identity.access import Actor, require
from backend.identity.keys import authenticate
from backend.storage.schema import ApiKey
from core.enums import Permission
from core.errors import FakewatchError

auth = HTTPTokenAuth(scheme="Bearer", description="An API key from `fakewatch keys create NAME`.")


VERIFIED = "fakewatch_verified_key"


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else ""


def verified_key(token: str) -> ApiKey | None:
    """The active key this token names, or None; looked up once per request (the limiter asks first, then the
    view's authentication)."""
    cached = g.get(VERIFIED)
    if cached is not None and cached[0] == token:
        found: ApiKey | None = cached[1]
        return found
    key: ApiKey | None = None
    if token:
        try:
            key = authenticate(db(), token)
        except FakewatchError:
            key = None
    setattr(g, VERIFIED, (token, key))
    return key


@auth.verify_token
def verify_token(token: str) -> ApiKey | None:
    if token:
        # A key was sent: if it fails, the 401 says the key is not recognised rather than missing
        # (backend/api/errors.py).
        g.key_presented = True
    return verified_key(token)  # the view reads it as auth.current_user


def current_key() -> ApiKey:
    """The API key the request was authenticated with (only in views behind ``auth_required``)."""
    key = auth.current_user
    assert isinstance(key, ApiKey)
    return key


def current_actor(permission: Permission | None = None) -> Actor:
    """The request's key as an Actor for the services; refused with ``forbidden`` (403) when ``permission`` is given
    and the key's role may not do it."""
    actor = Actor.of_key(current_key())
    if permission is not None:
        require(actor, permission)
    return actor


def rate_limit_key() -> str:
    """Limit per API key once the key is verified (by its id, never the key itself); anything else, a forged or
    revoked token included, by the client's address, so made-up tokens share one allowance."""
    try:
        key = verified_key(bearer_token())
    except Exception:  # noqa: BLE001 - the database is down: the view answers 503 itself; count by address meanwhile
        key = None
    if key is not None:
        return f"key:{key.id}"
    return "ip:" + get_remote_address()


class SweptMemoryStorage(MemoryStorage):
    """limits' in-process counters, with expired ones swept by a timer that waits a second instead of 10 ms.

    The stock storage starts a new ``threading.Timer`` of 10 ms whenever its last one has ended, which at a few
    hundred requests a second is a thread started on about every other request: a sixth of a GET's CPU in the API
    (py-spy, benchmarks/polling.py). Counting never depended on the sweep (a read drops an expired counter itself);
    the sweep only frees memory, which a second later does as well."""

    STORAGE_SCHEME = ["fakewatch-memory"]
    SWEEP_AFTER_S = 1.0

    # The base class calls this by its private (mangled) name on every hit.
    def _MemoryStorage__schedule_expiry(self) -> None:
        if not self.timer.is_alive():
            self.timer = threading.Timer(self.SWEEP_AFTER_S, self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
            self.timer.daemon = True
            self.timer.start()


def make_limiter(default_limit: str, storage_uri: str) -> Limiter:
    """The limiter fails open: when its storage (Redis) is down it counts in this process's memory until Redis
    answers again, and never turns a storage error into a failed request. ``memory://`` counts in
    SweptMemoryStorage."""
    if storage_uri == "memory://":
        storage_uri = "fakewatch-memory://"
    return Limiter(key_func=rate_limit_key, default_limits=[default_limit], storage_uri=storage_uri,
                   headers_enabled=True, in_memory_fallback_enabled=True, swallow_errors=True,
                   storage_options={"socket_connect_timeout": 1, "socket_timeout": 1}
                   if storage_uri.startswith(("redis://", "rediss://")) else {})
