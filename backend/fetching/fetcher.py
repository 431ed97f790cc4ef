"""Fetching an image by URL on a user's behalf without letting the user reach what the server can reach (SSRF).

How each hop (the URL, then every redirect) is made:

1. ``validate_url``: http or https, a host, at most 2048 characters, no spaces or control characters, no
   ``user:pass@`` credentials (they would be sent to whoever the URL names, and ``http://good@evil/`` misleads a
   reader), and a port that is 80, 443 or unprivileged (1024-65535). The other well-known ports (SSH 22,
   SMTP 25, ...) are refused: no image host serves there, and an HTTP request sent to them is a cross-protocol
   attack on a public server.
2. The host is resolved ONCE, and every address it resolves to must be allowed (``is_address_allowed``): public,
   or on ``settings.fetch_allowlist`` with this port (backend/fetching/allowlist.py: an entry without a port allows only 80
   and 443; a host name there allows all its addresses).
3. The connection is opened to one of those checked addresses, never to the name again, so a DNS answer that
   changes between the check and the connection (DNS rebinding) changes nothing. urllib3 still sends the host
   name in the Host header and checks the TLS certificate and SNI against it.
4. Redirects are not followed by urllib3: each Location is taken back to step 1, at most
   ``settings.fetch_max_redirects`` times.

The whole fetch shares one deadline (``settings.fetch_timeout_s``), enforced between reads as well as on each
socket operation, so a server that drips one byte a second cannot hold a worker. The body is streamed and
refused as soon as it passes its cap (a still's or, where its first bytes may start one, a clip's); what arrives
must pass ``inspect_media`` (a clip) or ``decode_checked`` (a still) whatever the
Content-Type said.

Not covered: name resolution itself is not bounded by the deadline (``getaddrinfo`` has no timeout), and no
proxy is used.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from PIL.Image import Image as PILImage
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from backend.fetching.allowlist import AllowEntry, parse_allowlist
from backend.settings import Settings
from core.decoding import mebibytes
from core.errors import FakewatchError
from core.media import MediaInfo, byte_cap, decode_media

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
REQUEST_HEADERS = {
    "User-Agent": "fakewatch (image check; +https://github.com/fakewatch)",
    "Accept": "image/*",
    # Compressed transfer would let a small body expand past the byte cap before it is counted.
    "Accept-Encoding": "identity",
}

# Refused whatever ``is_global`` says: Python's answer differs between releases and misses some of these
# (multicast counts as global; 6to4 and NAT64 prefixes are global but carry an IPv4 address inside).
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible addresses
        "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
    )
)  # fmt: skip
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


@dataclass
class FetchedImage:
    data: bytes
    final_url: str
    content_type: str | None
    # What the intake check found and, for a still, the pixels it decoded, so callers need not decode again.
    info: MediaInfo | None = None
    pixels: PILImage | None = None


class FetchError(FakewatchError):
    """A refused or failed fetch. ``transient`` says whether trying again later may succeed."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(code, message, status)
        self.transient = transient
        self.retry_after = retry_after
        self.http_status = http_status


def validate_url(url: str) -> str:
    """Check a URL's syntax (see the module docstring for the rules) and return it; raises invalid_url."""
    if not isinstance(url, str) or not url:
        raise _invalid_url("The URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid_url(f"The URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}.")
    # Checked before urlsplit, which silently drops tabs and newlines.
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise _invalid_url("The URL contains spaces or control characters; percent-encode them.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid_url(f"The URL cannot be parsed ({exc}).") from exc
    if not parts.scheme:
        raise _invalid_url("Not a full URL: give it with http:// or https:// in front.")
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise _invalid_url(f"Only http and https URLs can be fetched, not {parts.scheme}:.")
    if "@" in parts.netloc:
        raise _invalid_url("The URL carries a user name or password (user:pass@host); remove it.")
    if not parts.hostname:
        raise _invalid_url("The URL has no host name.")
    if port is not None and not _is_port_allowed(port):
        raise _invalid_url(f"Port {port} is refused; use 80, 443 or a port from 1024 to 65535.")
    try:
        parts.hostname.encode("idna")
    except UnicodeError as exc:
        raise _invalid_url(f"The host name {parts.hostname!r} is not a valid domain name.") from exc
    return url


def is_public_address(ip: IPAddress) -> bool:
    """Whether an address is on the public internet (and not a disguise for one that is not)."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_public_address(embedded)
    if any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version):
        return False
    return ip.is_global and not ip.is_multicast


def is_address_allowed(ip: IPAddress, allowlist: Iterable[str] = (), port: int | None = None) -> bool:
    """Whether the fetcher may connect to this address (on ``port``, when given): public, or inside an allow-listed
    IP or CIDR whose entry allows the port."""
    ip = _unmapped(ip)
    entries = parse_allowlist(allowlist)
    return any(entry.matches_ip(ip) and entry.allows_port(port) for entry in entries) or is_public_address(ip)


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to, in the resolver's order (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(
            "fetch_failed",
            f"The host {host} could not be resolved ({exc}); check the URL.",
            400,
            transient=getattr(exc, "errno", None) == socket.EAI_AGAIN,
        ) from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def open_socket(ip: IPAddress, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to exactly this address: the only place this module opens a socket."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect((str(ip), port))
    except BaseException:
        sock.close()
        raise
    return sock


def check_address(url: str, settings: Settings) -> None:
    """Refuse a valid URL whose host resolves to an address the fetcher may not reach (``blocked_address``), without
    connecting: the check a single URL check gets at submission. A host that does not resolve passes here; its
    fetch fails later with the reason (the answer may be a passing DNS hiccup)."""
    parts = urlsplit(url)
    try:
        _checked_addresses(parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme.lower()], settings)
    except FetchError as error:
        if error.code == "blocked_address":
            raise


def fetch_image(url: str, settings: Settings, deadline: float | None = None) -> FetchedImage:
    """Fetch an image from a URL under the rules in the module docstring; raises FetchError when refused.
    ``deadline`` (a ``time.monotonic()`` instant) ends the fetch sooner than ``fetch_timeout_s`` would."""
    own_deadline = time.monotonic() + settings.fetch_timeout_s
    deadline = own_deadline if deadline is None else min(deadline, own_deadline)
    current = validate_url(url)
    for _ in range(settings.fetch_max_redirects + 1):
        with _opened(current, settings, deadline) as response:
            location = _redirect_location(response, current)
            if location is None:
                return _image_from(response, current, settings, deadline)
        current = location
    raise FetchError(
        "fetch_failed",
        f"{url} redirects more than {settings.fetch_max_redirects} times; give the image's final URL.",
        400,
    )


class _Pinned:
    """Mixed into urllib3's connection classes: connect to a checked address; the host name is used only for the
    Host header (and, over HTTPS, for TLS SNI and the certificate check)."""

    def __init__(self, *args: Any, pinned_ip: IPAddress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned_ip = pinned_ip

    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self, self.pinned_ip)  # type: ignore[arg-type]


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PinnedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


def _connect_pinned(conn: HTTPConnection, ip: IPAddress) -> socket.socket:
    """urllib3's _new_conn, minus the name lookup; errors translated as urllib3 does."""
    try:
        return open_socket(ip, conn.port, conn.timeout)
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} ({ip}) timed out.") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to connect to {conn.host} ({ip}): {exc}") from exc


def post_json(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> int:
    """POST a JSON body (a callback) under the same guard and timeouts as an image fetch: the URL's syntax, every
    address its host resolves to (public, or allow-listed with this port), a connection pinned to a checked
    address, one deadline. Redirects are not followed (the caller counts a 3xx as a failed delivery). Returns the
    receiver's status; raises FetchError when the address is refused or the connection fails."""
    deadline = time.monotonic() + settings.fetch_timeout_s
    url = validate_url(url)
    sent = {**headers, "Content-Length": str(len(body))}
    with _opened(url, settings, deadline, method="POST", body=body, headers=sent) as response:
        # A little of the answer is read so the connection closes cleanly; what it says is not used.
        _shrink_read_timeout(response, _remaining(deadline, url))
        with suppress(HTTPError):
            response.read1(CHUNK_BYTES)
        return response.status


@contextmanager
def _opened(url: str, settings: Settings, deadline: float, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Iterator[BaseHTTPResponse]:
    """Send the request for one hop to a checked address of its host (a GET for an image, unless ``method`` says
    otherwise); yields the response, body unread."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last_error: HTTPError | None = None
    for ip in _checked_addresses(host, port, settings):
        pool = _pool(scheme, host, port, ip, settings, deadline)
        try:
            response = pool.urlopen(
                method,
                target,
                body=body,
                headers=headers if headers is not None else REQUEST_HEADERS,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except NewConnectionError as exc:
            # Refused by this address: the host may have others that work.
            pool.close()
            last_error = exc
            continue
        except HTTPError as exc:
            pool.close()
            raise _transport_error(exc, url) from exc
        try:
            yield response
        finally:
            response.close()
            pool.close()
        return
    assert last_error is not None  # _checked_addresses never returns an empty list
    raise _transport_error(last_error, url) from last_error


def _pool(scheme: str, host: str, port: int, ip: IPAddress, settings: Settings, deadline: float) -> HTTPConnectionPool:
    remaining = _remaining(deadline, host)
    timeout = Timeout(connect=min(settings.fetch_connect_timeout_s, remaining), read=remaining)
    pool_class = _PinnedHTTPSConnectionPool if scheme == "https" else _PinnedHTTPConnectionPool
    return pool_class(host, port, timeout=timeout, maxsize=1, retries=False, pinned_ip=ip)


def _checked_addresses(host: str, port: int, settings: Settings) -> list[IPAddress]:
    """Resolve once and check every answer: one refused address refuses the host."""
    addresses = resolve_host(host, port)
    if not addresses:
        raise FetchError("fetch_failed", f"The host {host} has no address.", 400)
    entries = parse_allowlist(settings.fetch_allowlist)
    if not _is_host_allowlisted(host, port, entries):
        refused = [ip for ip in addresses if not is_address_allowed(ip, settings.fetch_allowlist, port)]
        if refused:
            where = f"{host} is" if str(refused[0]) == host else f"{host} resolves to {refused[0]},"
            listed = [entry for entry in entries if entry.matches_ip(_unmapped(refused[0])) or entry.matches_host(host)]
            if listed:
                raise FetchError(
                    "blocked_address",
                    f"Port {port} of {host} is not allowed: the allow-list entry {listed[0].text!r} allows only "
                    f"{_port_list(listed[0])}; add {host}:{port} to FAKEWATCH_FETCH_ALLOWLIST if it should be.",
                    403,
                )
            raise FetchError(
                "blocked_address",
                f"{where} {_address_kind(refused[0])} address; fakewatch only connects to public internet addresses.",
                403,
            )
    return [_unmapped(ip) for ip in addresses]


def _redirect_location(response: BaseHTTPResponse, url: str) -> str | None:
    """The next URL when the response is a redirect (checked like the first), None otherwise."""
    if response.status not in REDIRECT_STATUSES:
        return None
    location = response.headers.get("Location")
    if not location:
        raise FetchError("fetch_failed", f"{url} answered {response.status} without a Location.", 400)
    try:
        return validate_url(urljoin(url, location))
    except FakewatchError as exc:
        raise FetchError(exc.code, f"{url} redirects to a refused URL: {exc.message}", exc.status) from exc


def _image_from(response: BaseHTTPResponse, url: str, settings: Settings, deadline: float) -> FetchedImage:
    _raise_for_status(response, url)
    data = _read_capped(response, url, settings, deadline)
    try:
        info, pixels = decode_media(data, settings.image_limits, settings.video_limits)
    except FakewatchError as exc:
        raise FetchError(exc.code, f"{url} is not a usable image: {exc.message}", exc.status) from exc
    return FetchedImage(data=data, final_url=url, content_type=response.headers.get("Content-Type"),
                        info=info, pixels=pixels)


def _raise_for_status(response: BaseHTTPResponse, url: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        raise FetchError(
            "fetch_failed",
            f"{url} answered {status}; the check will be tried again later.",
            400,
            transient=True,
            retry_after=retry_after,
            http_status=status,
        )
    reason = f" {response.reason}" if response.reason else ""
    raise FetchError("fetch_failed", f"{url} answered {status}{reason}.", 400, http_status=status)


def _read_capped(response: BaseHTTPResponse, url: str, settings: Settings, deadline: float) -> bytes:
    """The body, read in chunks against the byte cap and the deadline. The cap is the larger (a clip's) until the
    first chunk shows what the body is: a still is then cut off at the image cap."""
    cap = settings.max_upload_bytes
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(url, cap)
    chunks: list[bytes] = []
    size = 0
    while True:
        _shrink_read_timeout(response, _remaining(deadline, url))
        try:
            chunk = response.read1(CHUNK_BYTES)
        except HTTPError as exc:
            raise _transport_error(exc, url) from exc
        if not chunk:
            return b"".join(chunks)
        if not chunks:
            cap = byte_cap(chunk, settings.image_limits, settings.video_limits) or cap
        size += len(chunk)
        if size > cap:
            raise _too_large(url, cap)
        chunks.append(chunk)


def _shrink_read_timeout(response: BaseHTTPResponse, remaining: float) -> None:
    """Make the next socket read wait no longer than what is left of the whole fetch's deadline."""
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        sock.settimeout(remaining)


def _remaining(deadline: float, what: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError("fetch_failed", f"Fetching {what} took too long and was stopped.", 400, transient=True)
    return remaining


def _transport_error(exc: HTTPError, url: str) -> FetchError:
    """A urllib3 failure as a FetchError; timeouts and dropped connections may work next time."""
    if isinstance(exc, SSLError):
        return FetchError("fetch_failed", f"The TLS connection to {url} failed ({exc}).", 400)
    if isinstance(exc, NewConnectionError):
        return FetchError("fetch_failed", f"Could not connect to {url} ({exc}).", 400)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return FetchError("fetch_failed", f"{url} did not answer in time.", 400, transient=True)
    if isinstance(exc, ProtocolError):
        return FetchError("fetch_failed", f"The connection to {url} was dropped ({exc}).", 400, transient=True)
    return FetchError("fetch_failed", f"Fetching {url} failed ({exc}).", 400)


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: either a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _too_large(url: str, cap: int) -> FetchError:
    return FetchError("too_large", f"{url} is larger than the {mebibytes(cap, limit=True)} limit.", 413)


def _invalid_url(message: str) -> FetchError:
    # A validation failure, like every malformed field: 422 (400 is kept for a body that cannot be parsed).
    return FetchError("invalid_url", message, 422)


def _is_port_allowed(port: int) -> bool:
    return port in (80, 443) or 1024 <= port <= 65535


def _unmapped(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is that IPv4 address on the wire."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (mapped, 6to4, NAT64 well-known prefix), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_host_allowlisted(host: str, port: int, entries: Iterable[AllowEntry]) -> bool:
    return any(entry.matches_host(host) and entry.allows_port(port) for entry in entries)


def _port_list(entry: AllowEntry) -> str:
    return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in entry.ports)


def _address_kind(ip: IPAddress) -> str:
    """A word for why an address is refused, for the message."""
    ip = _embedded_ipv4(ip) or ip
    kinds = (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local (cloud metadata)"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "an unspecified"),
        ("is_private", "a private"),
        ("is_reserved", "a reserved"),
    )
    return next((word for attr, word in kinds if getattr(ip, attr)), "a non-public")
