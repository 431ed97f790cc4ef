"""Edges of the API found while integrating with it: the allow-list's ports, one status for validation failures,
the key messages, an over-limit upload's 413 over a real connection, sizes in MiB, every status in the spec,
`fakewatch up` on a taken port, and `fakewatch scan`'s progress."""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest
import requests
from flask.testing import FlaskClient

from backend.api import create_app
from backend.fetching.allowlist import parse_entry
from backend.fetching.fetcher import FetchError, check_address, fetch_image, is_address_allowed
from backend.identity.access import Actor
from backend.identity.keys import revoke_key
from backend.settings import Settings
from backend.storage.db import session_scope
from fakewatch import client_commands
from testbed.images import LocalServer, photo_bytes
from testbed.stack import Stack, ephemeral_port_range, free_port, isolated_settings

# --- the allow-list takes ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "host", "network", "ports"), [
    ("127.0.0.1", None, "127.0.0.1/32", ((80, 80), (443, 443))),
    ("127.0.0.1:8765", None, "127.0.0.1/32", ((8765, 8765),)),
    ("10.0.0.0/8:8080-8090", None, "10.0.0.0/8", ((8080, 8090),)),
    ("images.intranet.example:8443", "images.intranet.example", None, ((8443, 8443),)),
    ("Images.Intranet.Example.", "images.intranet.example", None, ((80, 80), (443, 443))),
    ("[::1]:9000", None, "::1/128", ((9000, 9000),)),
    ("fd00::/8", None, "fd00::/8", ((80, 80), (443, 443))),
])
def test_allowlist_entries_are_read_with_their_ports(entry: str, host: str | None, network: str | None,
                                                     ports: tuple[tuple[int, int], ...]) -> None:
    parsed = parse_entry(entry)
    assert parsed.host == host and str(parsed.network) == str(network) if network else parsed.network is None
    assert parsed.ports == ports


@pytest.mark.parametrize("entry", ["127.0.0.1:", "127.0.0.1:0", "10.0.0.0/8:9000-8000", "host:http", "[::1",
                                   "a b", "10.0.0.0/33"])
def test_an_unreadable_allowlist_entry_stops_the_settings(entry: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="allow-list entry"):
        isolated_settings(fetch_allowlist=entry)


def test_an_entry_without_a_port_allows_only_web_ports() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert is_address_allowed(loopback, ["127.0.0.1"], 443) and is_address_allowed(loopback, ["127.0.0.1"], 80)
    for port in (5432, 6379, 8080, 22):
        assert not is_address_allowed(loopback, ["127.0.0.1"], port), port
    ten = ipaddress.ip_address("10.2.3.4")
    assert is_address_allowed(ten, ["10.0.0.0/8:8080-8090"], 8085)
    assert not is_address_allowed(ten, ["10.0.0.0/8:8080-8090"], 5432)
    public = ipaddress.ip_address("93.184.215.14")
    assert is_address_allowed(public, [], 8080), "public addresses keep today's rule"


def test_database_ports_stay_closed_and_allowlisted_ports_open(image_server: LocalServer) -> None:
    image_server.routes["/edge.jpg"] = (200, {"Content-Type": "image/jpeg"}, photo_bytes(size=48))
    port_only = isolated_settings(fetch_allowlist=f"127.0.0.1:{image_server.port}")
    assert fetch_image(image_server.url("/edge.jpg"), port_only).data
    ranged = isolated_settings(fetch_allowlist=f"127.0.0.1:{ephemeral_port_range()}")
    assert fetch_image(image_server.url("/edge.jpg"), ranged).data
    bare = isolated_settings(fetch_allowlist="127.0.0.1")
    with pytest.raises(FetchError) as refused:
        fetch_image(image_server.url("/edge.jpg"), bare)
    assert refused.value.code == "blocked_address" and f"Port {image_server.port}" in refused.value.message
    assert "FAKEWATCH_FETCH_ALLOWLIST" in refused.value.message
    for settings in (port_only, ranged, bare):
        for port in (5432, 6379):
            with pytest.raises(FetchError) as blocked:
                check_address(f"http://127.0.0.1:{port}/", settings)
            assert blocked.value.code == "blocked_address"
    named = isolated_settings(fetch_allowlist="localhost")
    with pytest.raises(FetchError):
        check_address("http://localhost:5432/", named)
    check_address("http://localhost/", named)


# --- keys and validation statuses ------------------------------------------------------------------------------------


def test_a_wrong_or_revoked_key_is_told_apart_from_a_missing_one(client: FlaskClient, api_key: str,
                                                                  database: Settings) -> None:
    missing = client.get("/api/v1/batches")
    assert missing.status_code == 401 and "Send an API key" in missing.get_json()["error"]["message"]
    wrong = client.get("/api/v1/batches", headers={"Authorization": "Bearer fw_not_a_key_at_all_0000000000"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "unauthorized"
    assert wrong.get_json()["error"]["message"].startswith("This API key is not recognised or was revoked")
    with session_scope(database) as session:
        revoke_key(session, "tests", actor=Actor.system("tests"))
    revoked = client.get("/api/v1/batches", headers={"Authorization": f"Bearer {api_key}"})
    assert revoked.get_json()["error"]["message"].startswith("This API key is not recognised or was revoked")


@pytest.mark.usefixtures("active_model")
@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("post", "/api/v1/training-runs", {"json": {"epochs": 0}}, 422),
    ("post", "/api/v1/training-runs", {"json": {"epochs": 500}}, 422),
    ("post", "/api/v1/training-runs", {"json": {"epochs": "many"}}, 422),
    ("post", "/api/v1/training-runs", {"data": b"{oops", "content_type": "application/json"}, 400),
    ("post", "/api/v1/checks", {"json": {"url": "http://exa mple.org/a.jpg"}}, 422),
    ("post", "/api/v1/checks", {"json": {"url": 5}}, 422),
    ("post", "/api/v1/checks?wait=soon", {"json": {"url": "https://example.org/a.jpg"}}, 422),
    ("post", "/api/v1/batches", {"json": {"urls": "https://example.org/a.jpg"}}, 422),
    ("post", "/api/v1/batches", {"data": b"\xff\xfe\x00bad", "content_type": "text/plain"}, 400),
    ("get", "/api/v1/batches?page=0", {}, 422),
    ("get", "/api/v1/images/not-a-sha", {}, 422),
])
def test_validation_failures_are_422_and_only_unparseable_bodies_400(
        client: FlaskClient, auth_headers: dict[str, str], method: str, path: str, kwargs: dict[str, Any],
        status: int) -> None:
    response = getattr(client, method)(path, headers=auth_headers, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] in ("invalid_request", "invalid_url") and error["message"]


@pytest.mark.usefixtures("active_model")
def test_an_upload_over_the_cap_reads_its_size_in_mebibytes(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/checks", headers=auth_headers,
                           data={"image": (io.BytesIO(b"\xff" * 21_000_000), "big.jpg")})
    assert response.status_code == 413
    assert response.get_json()["error"]["message"].startswith("The image is 20.0 MiB; the limit is 20 MiB.")
    edge = client.post("/api/v1/checks", headers=auth_headers,
                       data={"image": (io.BytesIO(b"\xff" * (25 * 1024 * 1024)), "bigger.jpg")})
    # Under the request cap (a video's, 200 MiB), so the image cap refuses it by name.
    assert edge.status_code == 413 and "the limit is 20 MiB" in edge.get_json()["error"]["message"]


def test_an_over_limit_upload_is_read_to_its_end_before_the_413(client: FlaskClient,
                                                                 auth_headers: dict[str, str]) -> None:
    """The server answers before reading an upload it refuses by its Content-Length; it then reads (and drops)
    the rest, so a client still sending is not reset whatever the server in front does with the connection."""
    size = 25 * 1024 * 1024
    body = io.BytesIO(b"--x\r\n" + b"\x00" * (size - 5))
    response = client.post("/api/v1/checks", headers=auth_headers, input_stream=body, content_length=size,
                           content_type="multipart/form-data; boundary=x")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    assert body.tell() == size, "the refused body was drained"


def test_an_over_limit_upload_gets_its_413_over_a_real_connection(embedded_stack: Stack) -> None:
    """Without Expect: 100-continue (requests never sends it) the client is still sending when the server
    answers; the server reads the rest, so the client gets the JSON instead of a reset connection."""
    for _ in range(3):
        response = requests.post(f"{embedded_stack.api_url}/api/v1/checks", headers=embedded_stack.headers(),
                                 files={"image": ("big.jpg", b"\x00" * (25 * 1024 * 1024))}, timeout=60)
        assert response.status_code == 413
        # 25 MiB is under the request cap (a video's); the image cap refuses it by name once read.
        assert response.json()["error"]["code"] == "too_large"
        assert response.json()["error"]["message"].startswith("The image is 25.0 MiB; the limit is 20 MiB.")


# --- the spec --------------------------------------------------------------------------------------------------------


def test_every_status_an_endpoint_sends_is_in_the_spec(database: Settings) -> None:
    spec = cast(dict[str, Any], create_app(database).spec)
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    expected = {
        ("post", "/api/v1/checks"): {"200", "202", "400", "401", "403", "413", "415", "422", "429", "500", "503"},
        ("post", "/api/v1/batches"): {"202", "400", "401", "403", "413", "415", "422", "429", "500"},
        ("post", "/api/v1/training-runs"): {"202", "400", "401", "403", "409", "413", "422", "429", "500", "503"},
        ("get", "/api/v1/images/{sha256}"): {"200", "401", "404", "422", "429", "500"},
        ("delete", "/api/v1/images/{sha256}"): {"200", "401", "403", "404", "422", "429", "500"},
        ("post", "/api/v1/images/{sha256}/reviews"): {"201", "400", "401", "403", "404", "413", "422", "429", "500"},
        ("get", "/api/v1/queue"): {"200", "401", "403", "422", "429", "500"},
        ("post", "/api/v1/model-versions/{version_id}/promote"): {"200", "400", "401", "403", "404", "409", "413", "422", "429",
                                                                  "500"},
        ("post", "/api/v1/model-versions/rollback"): {"200", "401", "403", "409", "413", "429", "500"},
        ("get", "/readyz"): {"200", "500", "503"},
    }
    for operation, statuses in expected.items():
        assert set(operations[operation]["responses"]) == statuses, operation
    for (_, path), operation in operations.items():
        for status, response in operation["responses"].items():
            if status >= "400" and (path, status) != ("/readyz", "503"):  # not ready says why, in its own shape
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}


# --- fakewatch up and scan -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["FAKEWATCH_API_PORT", "FAKEWATCH_ADMIN_PORT"])
def test_up_refuses_a_taken_port_and_names_the_setting(tmp_path: Path, which: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {**os.environ, "FAKEWATCH_DATA_DIR": str(tmp_path / "var"), "FAKEWATCH_DATABASE_URL": "",
               "FAKEWATCH_BROKER_URL": "", "FAKEWATCH_API_PORT": str(free_port()),
               "FAKEWATCH_ADMIN_PORT": str(free_port()), which: str(port)}
        result = subprocess.run([sys.executable, "-m", "fakewatch.cli", "up"], env=env, capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert f"Port {port}" in result.stderr and which in result.stderr
    assert "Ready" not in result.stderr + result.stdout
    assert not (tmp_path / "var" / "logs").exists(), "nothing was started"


class _Batches:
    """The API as `watch` sees it: one batch, further on at each poll."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states

    def get_json(self, _path: str) -> dict[str, Any]:
        return self.states.pop(0)


def test_scan_progress_bar_and_done_counter_agree(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_commands, "SCAN_POLL_S", 0)
    base = {"id": "b", "total": 4, "flagged": 1, "rate_per_s": 1.0, "eta_s": 1.0, "running": 0, "cancelled": 0}
    states = [{**base, "status": "running", "done": 1, "failed": 1, "queued": 2},
              {**base, "status": "done", "done": 3, "failed": 1, "queued": 0}]
    final = client_commands.watch(_Batches(states[1:]), states[0])  # type: ignore[arg-type]
    assert final["status"] == "done"
    err = capsys.readouterr().err
    # The bar and its text share one count, drawn together (fakewatch/client_commands.py).
    assert "2/4 finished [" in err and "1 checked, 1 flagged, 1 failed" in err, "after one poll: 2 finished"
    assert "4/4 finished [" in err and "3 checked, 1 flagged, 1 failed, 0 cancelled" in err
