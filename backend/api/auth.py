"""API-key authentication and per-key rate limits."""

from __future__ import annotations

from apiflask import HTTPTokenAuth
from flask import g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from backend.access import Actor, require
from backend.api.context import db
from backend.keys import authenticate, hash_key
from backend.schema import ApiKey
from core.enums import Permission
from core.errors import FakewatchError

auth = HTTPTokenAuth(scheme="Bearer", description="An API key from `fakewatch keys create NAME`.")


@auth.verify_token
def verify_token(token: str) -> ApiKey | None:
    if not token:
        return None
    # A key was sent: if it fails, the 401 says the key is not recognised rather than missing (backend/api/errors.py).
    g.key_presented = True
    try:
        key = authenticate(db(), token)
    except FakewatchError:
        return None
    return key  # the view reads it as auth.current_user


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
    """Limit per API key (its hash prefix, never the key itself); anonymous requests by address."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and len(header) > 20:
        return "key:" + hash_key(header[7:].strip())[:16]
    return "ip:" + get_remote_address()


def make_limiter(default_limit: str, storage_uri: str) -> Limiter:
    return Limiter(key_func=rate_limit_key, default_limits=[default_limit], storage_uri=storage_uri,
                   headers_enabled=True)
