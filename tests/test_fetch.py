"""The SSRF-safe fetcher.

No traffic leaves this machine. Every test runs with two fakes in place:
- ``socket.getaddrinfo`` answers from a table (names not in it are only parsed as numeric addresses, never
  looked up), so hostile names can "resolve" to hostile addresses;
- ``socket.socket.connect`` is guarded: it connects only to 127.0.0.1 (the local test servers) and to the
  documented stand-ins for public addresses, which it forwards to a local server. Any other connection attempt
  fails the test, so a refusal that happened after connecting would be caught.
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image
from skimage import data as skimage_data

from backend.fetching.fetcher import FetchError, check_address, fetch_image, is_address_allowed, validate_url
from backend.settings import Settings
from testbed.stack import isolated_settings, local_allowlist

# Stand-ins for public addresses. The connect guard forwards them to a local server, never to the internet.
PUBLIC_A = "93.184.216.34"
PUBLIC_B = "93.184.216.35"

FAKE_DNS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "metadata.google.internal": ["169.254.169.254"],
    "metadata.test": ["169.254.169.254"],
    "intranet.test": ["10.1.2.3"],
    "cgnat.test": ["100.64.0.1"],
    "mixed.test": [PUBLIC_A, "192.168.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "ula.test": ["fd00::1"],
    "multicast.test": ["239.255.255.250"],
    "sixtofour.test": ["2002:a9fe:a9fe::1"],
    "nat64.test": ["64:ff9b::a00:1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "img.test": [PUBLIC_A],
    "other.test": [PUBLIC_A],
    "twohomes.test": [PUBLIC_A, PUBLIC_B],
}


def jpeg_photo() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


PHOTO = jpeg_photo()
HTML_PAGE = b"<!DOCTYPE html><html><body><img src='/photo.jpg'></body></html>"


# ---------------------------------------------------------------------------------------------------------
# The fakes every test runs under


@dataclass
class FakeResolver:
    answers: dict[str, list[list[str]]] = field(default_factory=dict)  # successive answers; the last repeats
    calls: list[str] = field(default_factory=list)

    def set(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)


@dataclass
class ConnectGuard:
    attempts: list[str] = field(default_factory=list)
    forward: dict[str, int] = field(default_factory=dict)  # stand-in public address -> local port
    refuse: set[str] = field(default_factory=set)


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    fake = FakeResolver({name: [ips] for name, ips in FAKE_DNS.items()})
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = str(host).lower().rstrip(".")
        fake.calls.append(name)
        if name in fake.answers:
            queue = fake.answers[name]
            ips = queue.pop(0) if len(queue) > 1 else queue[0]
            return [_addrinfo(ip, int(port)) for ip in ips]
        # Numeric forms only (2130706433, 0x7f.1...): AI_NUMERICHOST never sends a DNS query.
        return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


def _addrinfo(ip: str, port: int) -> tuple[Any, ...]:
    if ipaddress.ip_address(ip).version == 6:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> ConnectGuard:
    fake = ConnectGuard()
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        host = address[0]
        fake.attempts.append(host)
        if host in fake.forward:
            return real_connect(sock, ("127.0.0.1", fake.forward[host]))
        if host in fake.refuse:
            raise ConnectionRefusedError(111, "Connection refused (test)")
        if host == "127.0.0.1":
            return real_connect(sock, address)
        pytest.fail(f"the fetcher opened a connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    return fake


# ---------------------------------------------------------------------------------------------------------
# A local image server on 127.0.0.1


class ImageHandler(http.server.BaseHTTPRequestHandler):
    server: ImageServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.seen.append((parts.path, self.headers.get("Host", "")))
        route = getattr(self, "route_" + parts.path.strip("/").split("/")[0].replace("-", "_").replace(".", "_"), None)
        if route is None:
            self.send_error(404)
            return
        route(parts.path, parse_qs(parts.query))

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_photo_jpg(self, path: str, query: dict[str, list[str]]) -> None:
        self.reply(200, PHOTO, "image/jpeg")

    def route_photo_labelled_html(self, path: str, query: dict[str, list[str]]) -> None:
        self.reply(200, PHOTO, "text/html")

    def route_page_html(self, path: str, query: dict[str, list[str]]) -> None:
        self.reply(200, HTML_PAGE, "image/jpeg")  # a page that claims to be an image

    def route_unavailable(self, path: str, query: dict[str, list[str]]) -> None:
        self.reply(503, b"down for maintenance", "text/plain")

    def route_busy(self, path: str, query: dict[str, list[str]]) -> None:
        self.reply(429, b"slow down", "text/plain", Retry_After="7")

    def route_slow(self, path: str, query: dict[str, list[str]]) -> None:
        time.sleep(3)
        self.reply(200, PHOTO, "image/jpeg")

    def route_drip(self, path: str, query: dict[str, list[str]]) -> None:
        """Each byte arrives well within a read timeout; the whole body never arrives in time."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        try:
            for index in range(40):
                self.wfile.write(PHOTO[index : index + 1])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def route_huge_declared(self, path: str, query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        self.write_quietly(PHOTO)

    def route_huge_undeclared(self, path: str, query: dict[str, list[str]]) -> None:
        """No Content-Length (HTTP/1.0: the body ends when the connection closes), and a body without end:
        only a cap applied while streaming stops it before the deadline."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.write_quietly(PHOTO)
        stop_at = time.monotonic() + 5
        while time.monotonic() < stop_at and self.write_quietly(b"\x00" * 65536):
            pass

    def route_short_body(self, path: str, query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.write_quietly(PHOTO[: len(PHOTO) // 2])

    def route_hops(self, path: str, query: dict[str, list[str]]) -> None:
        left = int(path.rsplit("/", 1)[1])
        if left == 0:
            self.reply(200, PHOTO, "image/jpeg")
        else:
            self.redirect(f"/hops/{left - 1}")

    def route_to(self, path: str, query: dict[str, list[str]]) -> None:
        self.redirect(query["url"][0], int(query.get("status", ["302"])[0]))

    def route_loop(self, path: str, query: dict[str, list[str]]) -> None:
        self.redirect("/loop", 301)

    def route_no_location(self, path: str, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def write_quietly(self, body: bytes) -> bool:
        try:
            self.wfile.write(body)
        except OSError:
            return False  # the fetcher hung up, as it should
        return True


class ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ImageHandler)
        self.seen: list[tuple[str, str]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def serve(server: http.server.HTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    image_server = ImageServer()
    for _ in serve(image_server):
        yield image_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The allow-list opens 127.0.0.1's ephemeral ports only (where test servers listen), as a test deployment would;
    short timeouts keep tests fast."""
    return isolated_settings(
        data_dir=tmp_path,
        fetch_allowlist=[local_allowlist()],
        fetch_connect_timeout_s=0.5,
        fetch_timeout_s=1.0,
        max_image_bytes=1_000_000,
    )


@pytest.fixture
def strict_settings(tmp_path: Path) -> Settings:
    """The production default: nothing allow-listed."""
    return isolated_settings(data_dir=tmp_path, fetch_allowlist=[], fetch_timeout_s=1.0, fetch_connect_timeout_s=0.5)


def fetch_error(url: str, settings: Settings) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_image(url, settings)
    return caught.value


# ---------------------------------------------------------------------------------------------------------
# The address rules, as a pure function

ADDRESS_TABLE: list[tuple[str, list[str], bool]] = [
    # public
    ("8.8.8.8", [], True),
    ("1.1.1.1", [], True),
    ("2606:4700:4700::1111", [], True),
    ("2002:808:808::1", [], True),  # 6to4 around a public IPv4 address
    ("64:ff9b::808:808", [], True),  # NAT64 around a public IPv4 address
    ("::ffff:8.8.8.8", [], True),
    # IPv4 that is not public
    ("127.0.0.1", [], False),
    ("127.255.255.254", [], False),
    ("0.0.0.0", [], False),
    ("0.1.2.3", [], False),
    ("10.0.0.1", [], False),
    ("172.16.0.1", [], False),
    ("172.31.255.255", [], False),
    ("192.168.1.1", [], False),
    ("169.254.169.254", [], False),  # cloud metadata
    ("100.64.0.1", [], False),  # carrier-grade NAT
    ("100.127.255.254", [], False),
    ("192.0.0.8", [], False),
    ("192.0.2.1", [], False),
    ("192.88.99.1", [], False),  # 6to4 relay anycast
    ("198.18.0.1", [], False),
    ("198.51.100.1", [], False),
    ("203.0.113.1", [], False),
    ("224.0.0.1", [], False),  # multicast: Python calls it global
    ("239.255.255.250", [], False),
    ("240.0.0.1", [], False),
    ("255.255.255.255", [], False),
    # IPv6 that is not public, or hides an IPv4 address that is not
    ("::1", [], False),
    ("::", [], False),
    ("::127.0.0.1", [], False),  # deprecated IPv4-compatible
    ("::ffff:127.0.0.1", [], False),  # IPv4-mapped
    ("::ffff:169.254.169.254", [], False),
    ("::ffff:10.0.0.1", [], False),
    ("::ffff:0:a00:1", [], False),  # IPv4-translated
    ("2002:7f00:1::", [], False),  # 6to4 around 127.0.0.1
    ("2002:a9fe:a9fe::", [], False),  # 6to4 around 169.254.169.254
    ("64:ff9b::7f00:1", [], False),  # NAT64 around 127.0.0.1
    ("64:ff9b::a9fe:a9fe", [], False),  # NAT64 around 169.254.169.254
    ("64:ff9b:1::a00:1", [], False),  # local-use NAT64
    ("2001::1", [], False),  # Teredo
    ("2001:db8::1", [], False),
    ("fc00::1", [], False),
    ("fd12:3456::1", [], False),
    ("fe80::1", [], False),
    ("fec0::1", [], False),
    ("ff02::1", [], False),
    ("100::1", [], False),
    # the allow-list opens exactly what it names
    ("127.0.0.1", ["127.0.0.1"], True),
    ("::ffff:127.0.0.1", ["127.0.0.1"], True),
    ("127.0.0.2", ["127.0.0.1"], False),
    ("::1", ["127.0.0.1"], False),
    ("10.20.30.40", ["10.0.0.0/8"], True),
    ("11.0.0.1", ["10.0.0.0/8"], True),  # public anyway
    ("172.16.0.1", ["10.0.0.0/8"], False),
    ("fd00::5", ["fd00::/64"], True),
    ("169.254.169.254", ["images.internal"], False),  # a host name never opens an address by itself
]


@pytest.mark.parametrize(
    ("ip", "allowlist", "allowed"),
    ADDRESS_TABLE,
    ids=[row[0] + (f" allow={row[1]}" if row[1] else "") for row in ADDRESS_TABLE],
)
def test_address_table(ip: str, allowlist: list[str], allowed: bool) -> None:
    assert is_address_allowed(ipaddress.ip_address(ip), allowlist) is allowed


# ---------------------------------------------------------------------------------------------------------
# Hostile URLs: refused before any connection (the guard fails the test on any attempt)

LONG_URL = "http://example.test/" + "a" * 2100

HOSTILE_URLS: list[tuple[str, str]] = [
    ("ftp://example.test/cat.jpg", "invalid_url"),
    ("file:///etc/passwd", "invalid_url"),
    ("gopher://127.0.0.1:7000/_GET", "invalid_url"),
    ("javascript:alert(1)", "invalid_url"),
    ("data:image/png;base64,iVBORw0KGgo=", "invalid_url"),
    ("http:///cat.jpg", "invalid_url"),
    ("http://user:secret@example.test/cat.jpg", "invalid_url"),
    ("http://example.test@127.0.0.1/cat.jpg", "invalid_url"),
    ("http://127.0.0.1:22/", "invalid_url"),
    ("http://example.test:25/", "invalid_url"),
    ("http://example.test:99999/", "invalid_url"),
    (LONG_URL, "invalid_url"),
    ("http://example.test/cat.jpg\r\nX-Injected: 1", "invalid_url"),
    ("http://example.test/\tcat.jpg", "invalid_url"),
    ("http://exa mple.test/", "invalid_url"),
    ("http://[::1/", "invalid_url"),
    ("http://127.0.0.1/", "blocked_address"),
    ("HTTP://LOCALHOST./", "blocked_address"),
    ("http://localhost:8000/admin", "blocked_address"),
    ("http://[::1]/", "blocked_address"),
    ("http://[::]/", "blocked_address"),
    ("http://0.0.0.0:8000/", "blocked_address"),
    ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
    ("https://169.254.169.254:443/", "blocked_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "blocked_address"),
    ("http://10.1.2.3/", "blocked_address"),
    ("http://172.16.5.4/", "blocked_address"),
    ("http://192.168.1.1/", "blocked_address"),
    ("http://intranet.test/cat.jpg", "blocked_address"),
    ("http://100.64.0.1/", "blocked_address"),
    ("http://cgnat.test/", "blocked_address"),
    ("http://[::ffff:127.0.0.1]/", "blocked_address"),
    ("http://[::ffff:a9fe:a9fe]/", "blocked_address"),
    ("http://mapped.test/", "blocked_address"),
    ("http://[2002:7f00:1::]/", "blocked_address"),
    ("http://sixtofour.test/", "blocked_address"),
    ("http://[64:ff9b::7f00:1]/", "blocked_address"),
    ("http://nat64.test/", "blocked_address"),
    ("http://[fe80::1]/", "blocked_address"),
    ("http://[fe80::1%25eth0]/", "blocked_address"),
    ("http://[fd00::1]/", "blocked_address"),
    ("http://ula.test/", "blocked_address"),
    ("http://[ff02::1]/", "blocked_address"),
    ("http://224.0.0.1/", "blocked_address"),
    ("http://multicast.test/", "blocked_address"),
    ("http://255.255.255.255/", "blocked_address"),
    ("http://2130706433/", "blocked_address"),  # 127.0.0.1 as one decimal number
    ("http://0x7f.1/", "blocked_address"),
    ("http://0177.0.0.1/", "blocked_address"),
    ("http://127.1/", "blocked_address"),
    ("http://127.0.0.1.nip.io/", "blocked_address"),
    ("http://mixed.test/", "blocked_address"),  # one public and one private answer: refused
    ("http://nxdomain.test/", "fetch_failed"),
]


@pytest.mark.parametrize(("url", "code"), HOSTILE_URLS, ids=[url[:60] for url, _ in HOSTILE_URLS])
def test_hostile_url_is_refused_without_connecting(
    url: str, code: str, strict_settings: Settings, guard: ConnectGuard
) -> None:
    error = fetch_error(url, strict_settings)

    assert error.code == code, error.message
    assert error.status == {"invalid_url": 422, "blocked_address": 403, "fetch_failed": 400}[code]
    assert not error.transient
    assert guard.attempts == []


def test_validate_url_accepts_ordinary_urls() -> None:
    for url in ("https://example.test/a.jpg?size=large#top", "http://example.test:8080/a", "HTTPS://Example.Test/"):
        assert validate_url(url) == url


def test_blocked_message_names_the_address(strict_settings: Settings) -> None:
    error = fetch_error("http://metadata.test/latest/", strict_settings)
    assert "169.254.169.254" in error.message and "public" in error.message


# ---------------------------------------------------------------------------------------------------------
# Real fetches from the local server


def test_real_photo_is_fetched(server: ImageServer, settings: Settings) -> None:
    fetched = fetch_image(server.url("/photo.jpg"), settings)

    assert fetched.data == PHOTO
    assert fetched.final_url == server.url("/photo.jpg")
    assert fetched.content_type == "image/jpeg"
    assert fetched.info is not None and (fetched.info.format, fetched.info.width) == ("JPEG", 451)


def test_bytes_decide_not_the_content_type(server: ImageServer, settings: Settings) -> None:
    assert fetch_image(server.url("/photo-labelled-html"), settings).data == PHOTO
    error = fetch_error(server.url("/page.html"), settings)
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert "HTML" in error.message


@pytest.mark.parametrize(
    ("path", "http_status", "transient", "retry_after"),
    [("/missing", 404, False, None), ("/unavailable", 503, True, None), ("/busy", 429, True, 7.0)],
)
def test_http_errors(
    path: str, http_status: int, transient: bool, retry_after: float | None, server: ImageServer, settings: Settings
) -> None:
    error = fetch_error(server.url(path), settings)
    assert error.code == "fetch_failed"
    assert (error.http_status, error.transient, error.retry_after) == (http_status, transient, retry_after)
    assert str(http_status) in error.message


@pytest.mark.parametrize("path", ["/slow", "/drip"], ids=["no-answer", "one-byte-at-a-time"])
def test_total_timeout(path: str, server: ImageServer, settings: Settings) -> None:
    started = time.monotonic()
    error = fetch_error(server.url(path), settings)
    elapsed = time.monotonic() - started

    assert error.code == "fetch_failed" and error.transient
    assert 0.9 < elapsed < 1.8, f"took {elapsed:.2f}s with fetch_timeout_s=1"


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-undeclared"])
def test_oversized_body_is_cut_off(path: str, server: ImageServer, settings: Settings) -> None:
    started = time.monotonic()
    error = fetch_error(server.url(path), settings)
    assert (error.code, error.status) == ("too_large", 413)
    assert time.monotonic() - started < 0.9


def test_body_cut_short_is_a_transient_failure(server: ImageServer, settings: Settings) -> None:
    error = fetch_error(server.url("/short-body"), settings)
    assert error.code == "fetch_failed" and error.transient


def test_connection_refused(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/photo.jpg", settings)
    assert error.code == "fetch_failed" and not error.transient


# ---------------------------------------------------------------------------------------------------------
# Redirect chains: every hop is checked again

REDIRECTS: list[tuple[str, str | None]] = [
    ("/hops/1", None),
    ("/hops/2", None),
    ("/hops/3", None),  # exactly fetch_max_redirects
    ("/hops/4", "fetch_failed"),
    ("/loop", "fetch_failed"),
    ("/no-location", "fetch_failed"),
    ("/to?url=/photo.jpg", None),
    ("/to?status=307&url=photo.jpg", None),
    ("/to?status=308&url=http://127.0.0.1:{port}/photo.jpg", None),
    ("/to?url=http://127.0.0.2:{port}/photo.jpg", "blocked_address"),
    ("/to?url=//127.0.0.2:{port}/photo.jpg", "blocked_address"),
    ("/to?url=http://[::1]:{port}/photo.jpg", "blocked_address"),
    ("/to?url=http://0.0.0.0:{port}/photo.jpg", "blocked_address"),
    ("/to?url=http://2130706434:{port}/photo.jpg", "blocked_address"),
    ("/to?url=http://[::ffff:169.254.169.254]/", "blocked_address"),
    ("/to?url=http://metadata.test/latest/meta-data/", "blocked_address"),
    ("/to?url=http://intranet.test:{port}/photo.jpg", "blocked_address"),
    ("/to?url=file:///etc/passwd", "invalid_url"),
    ("/to?url=ftp://127.0.0.1/photo.jpg", "invalid_url"),
    ("/to?url=http://u:p@127.0.0.1:{port}/photo.jpg", "invalid_url"),
    ("/to?url=http://127.0.0.1:22/", "invalid_url"),
    ("/to?url=/hops/3", "fetch_failed"),  # 1 + 3 redirects
    ("/to?url=/to%3Furl%3Dhttp://metadata.test/", "blocked_address"),  # refused on the second hop
]


@pytest.mark.parametrize(("path", "code"), REDIRECTS, ids=[path for path, _ in REDIRECTS])
def test_redirect_chain(
    path: str, code: str | None, server: ImageServer, settings: Settings, guard: ConnectGuard
) -> None:
    url = server.url(path.format(port=server.port))
    if code is None:
        assert fetch_image(url, settings).data == PHOTO
    else:
        assert fetch_error(url, settings).code == code
    assert set(guard.attempts) == {"127.0.0.1"}, "only the allow-listed address may be connected to"


def test_redirect_final_url_is_reported(server: ImageServer, settings: Settings) -> None:
    assert fetch_image(server.url("/hops/2"), settings).final_url == server.url("/hops/0")


# ---------------------------------------------------------------------------------------------------------
# DNS: the connection goes to the address that was checked


def test_dns_rebinding_connects_to_the_checked_address(
    server: ImageServer, strict_settings: Settings, resolver: FakeResolver, guard: ConnectGuard
) -> None:
    """The name first resolves to a public address, then to the metadata service: the second answer is never
    asked for, and the connection goes to the first (forwarded to the local server by the guard)."""
    resolver.set("rebind.test", [PUBLIC_A], ["169.254.169.254"])
    guard.forward[PUBLIC_A] = server.port
    url = f"http://rebind.test:{server.port}/photo.jpg"

    assert fetch_image(url, strict_settings).data == PHOTO
    assert resolver.calls.count("rebind.test") == 1
    assert guard.attempts == [PUBLIC_A]
    assert server.seen[-1] == ("/photo.jpg", f"rebind.test:{server.port}")  # the Host header keeps the name


def test_dns_rebinding_the_other_way_is_refused(
    strict_settings: Settings, resolver: FakeResolver, guard: ConnectGuard
) -> None:
    resolver.set("rebind.test", ["169.254.169.254"], [PUBLIC_A])
    assert fetch_error("http://rebind.test/", strict_settings).code == "blocked_address"
    assert guard.attempts == []


def test_each_fetch_resolves_afresh(
    server: ImageServer, strict_settings: Settings, resolver: FakeResolver, guard: ConnectGuard
) -> None:
    """A name that turns private after a good fetch is refused on the next fetch (no stale cache)."""
    resolver.set("turns.test", [PUBLIC_A], ["10.0.0.7"])
    guard.forward[PUBLIC_A] = server.port
    url = f"http://turns.test:{server.port}/photo.jpg"

    fetch_image(url, strict_settings)
    assert fetch_error(url, strict_settings).code == "blocked_address"
    assert guard.attempts == [PUBLIC_A]


def test_next_checked_address_is_tried_when_one_refuses(
    server: ImageServer, strict_settings: Settings, guard: ConnectGuard
) -> None:
    guard.refuse.add(PUBLIC_A)
    guard.forward[PUBLIC_B] = server.port
    assert fetch_image(f"http://twohomes.test:{server.port}/photo.jpg", strict_settings).data == PHOTO
    assert guard.attempts == [PUBLIC_A, PUBLIC_B]


def test_redirect_to_a_name_that_resolves_to_metadata_is_refused_before_connecting(
    server: ImageServer, strict_settings: Settings, resolver: FakeResolver, guard: ConnectGuard
) -> None:
    guard.forward[PUBLIC_A] = server.port
    target = quote("http://metadata.test/latest/meta-data/iam/", safe="")
    error = fetch_error(f"http://img.test:{server.port}/to?url={target}", strict_settings)

    assert error.code == "blocked_address"
    assert "metadata.test" in resolver.calls
    assert guard.attempts == [PUBLIC_A]  # the first hop only


def test_dns_failure(strict_settings: Settings) -> None:
    error = fetch_error("https://no-such-host.test/cat.jpg", strict_settings)
    assert error.code == "fetch_failed" and "no-such-host.test" in error.message


# ---------------------------------------------------------------------------------------------------------
# TLS: connected to an address, but SNI and the certificate check use the host name


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ImageServer, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=img.test",
         "-addext", "subjectAltName=DNS:img.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    image_server = ImageServer()
    image_server.socket = context.wrap_socket(image_server.socket, server_side=True)
    for _ in serve(image_server):
        yield image_server, cert


def test_https_checks_the_certificate_against_the_host_name(
    tls_server: tuple[ImageServer, Path],
    strict_settings: Settings,
    guard: ConnectGuard,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image_server, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate, for img.test only
    guard.forward[PUBLIC_A] = image_server.port

    fetched = fetch_image(f"https://img.test:{image_server.port}/photo.jpg", strict_settings)
    assert fetched.data == PHOTO

    # Same address, same certificate, another name: the certificate does not cover it.
    error = fetch_error(f"https://other.test:{image_server.port}/photo.jpg", strict_settings)
    assert error.code == "fetch_failed" and not error.transient
    assert "other.test" in error.message or "certificate" in error.message.lower()


def test_a_url_without_or_with_a_wrong_scheme_says_what_to_fix() -> None:
    with pytest.raises(FetchError) as missing:
        validate_url("images.example.org/cat.jpg")
    assert missing.value.code == "invalid_url" and "http:// or https://" in missing.value.message
    with pytest.raises(FetchError) as wrong:
        validate_url("ftp://images.example.org/cat.jpg")
    assert wrong.value.message == "Only http and https URLs can be fetched, not ftp:."


# ---------------------------------------------------------------------------------------------------------
# The check a single URL check gets at submission


def test_submission_check_refuses_blocked_hosts_without_connecting(
    strict_settings: Settings, resolver: FakeResolver, guard: ConnectGuard
) -> None:
    """A single URL check is refused at once only for a syntax error or a blocked address; a public host, or one
    that does not resolve yet, is left to the worker's fetch."""
    with pytest.raises(FetchError) as refused:
        check_address("http://metadata.test/latest/", strict_settings)
    assert (refused.value.code, refused.value.status) == ("blocked_address", 403)
    assert "169.254.169.254" in refused.value.message
    check_address("http://img.test/photo.jpg", strict_settings)
    check_address("https://no-such-host.test/cat.jpg", strict_settings)
    assert "img.test" in resolver.calls and "no-such-host.test" in resolver.calls
    assert guard.attempts == [], "nothing is fetched at submission"
