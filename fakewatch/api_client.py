"""A small HTTP client for the fakewatch API, used by the client commands (fakewatch/client_commands.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from backend.settings import Settings
from core.enums import CheckStatus


class ClientError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A poll reuses its kept-alive connection, which the server may close at the same moment, and a restarting API or
# load balancer resets connections for a few seconds: a request that changes nothing (GET) or that the server
# answers once per Idempotency-Key (POST with one) is sent again on a fresh connection, backing off 0, 1, 2, 4, 8, 8 s
# (about 20 s in all) before the client calls the API unreachable.
IDEMPOTENT_RETRIES = Retry(total=6, connect=6, read=6, status=0, other=0, backoff_factor=0.5, backoff_max=8,
                           allowed_methods=frozenset({"GET", "HEAD", "POST"}), raise_on_status=False)
# A POST the server does not deduplicate is only sent again when it never reached the server (connect errors).
SEND_ONCE_RETRIES = Retry(total=3, connect=3, read=0, status=0, other=0, backoff_factor=0.5,
                          allowed_methods=frozenset({"GET"}), raise_on_status=False)
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The endpoints that honour an Idempotency-Key (backend/checks/idempotency.py).
IDEMPOTENT_POSTS = ("/api/v1/checks", "/api/v1/batches")


def _session(retries: Retry, api_key: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retries))
    session.mount("https://", HTTPAdapter(max_retries=retries))
    session.headers["Authorization"] = f"Bearer {api_key}"
    return session


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout_s: float = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = _session(IDEMPOTENT_RETRIES, api_key)
        self.once = _session(SEND_ONCE_RETRIES, api_key)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        if not settings.api_key:
            raise SystemExit("Set FAKEWATCH_API_KEY (printed by `fakewatch up`, or `fakewatch keys create NAME`).")
        return cls(settings.api_base_url, settings.api_key)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request; a POST to an endpoint that honours Idempotency-Key gets a fresh key, so it may be sent
        again safely (the same key on every retry of this call)."""
        session = self.session
        if method.upper() == "POST":
            if path in IDEMPOTENT_POSTS:
                kwargs["headers"] = {IDEMPOTENCY_HEADER: uuid.uuid4().hex, **(kwargs.get("headers") or {})}
            else:
                session = self.once
        try:
            kwargs.setdefault("timeout", self.timeout_s)
            response = session.request(method, self.base_url + path, **kwargs)
        except requests.ConnectionError as error:
            raise ClientError("unreachable", f"Cannot reach the fakewatch API at {self.base_url}: is it running "
                                             "(`fakewatch up`) and is FAKEWATCH_API_URL right?") from error
        if response.status_code >= 400:
            try:
                body = response.json()["error"]
                raise ClientError(body["code"], body["message"])
            except (ValueError, KeyError, TypeError):
                raise ClientError("http_error", f"HTTP {response.status_code} from {path}") from None
        return response

    def check(self, target: str, wait_s: float = 10.0) -> dict[str, Any]:
        """Submit a file path or an http(s) URL and return the check object, waiting up to ``wait_s`` for it."""
        start = time.monotonic()
        # The server caps the wait at its own FAKEWATCH_MAX_WAIT_S; the read timeout must outlast it.
        params = {"wait": wait_s}
        timeout_s = self.timeout_s + wait_s
        if target.startswith(("http://", "https://")):
            response = self.request("POST", "/api/v1/checks", params=params, json={"url": target}, timeout=timeout_s)
        else:
            path = Path(target)
            if not path.is_file():
                raise ClientError("not_found", f"{target} is not a file or an http(s) URL.")
            with path.open("rb") as handle:
                response = self.request("POST", "/api/v1/checks", params=params, files={"image": (path.name, handle)},
                                        timeout=timeout_s)
        result: dict[str, Any] = response.json()
        return self.wait_for_check(result, deadline=start + wait_s)

    def wait_for_check(self, check: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Poll a check until it is final or the deadline (a time.monotonic() value) passes."""
        while not CheckStatus(check["status"]).is_final and time.monotonic() < deadline:
            time.sleep(0.5)  # the server asks for 1 s (Retry-After); a verdict usually comes sooner
            check = self.get_json(f"/api/v1/checks/{check['id']}")
        return check

    def get_json(self, path: str, **params: Any) -> Any:
        return json.loads(self.request("GET", path, params=params).content)
