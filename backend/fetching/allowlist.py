"""``FAKEWATCH_FETCH_ALLOWLIST``: the non-public hosts, IPs and networks the server may connect to on a user's behalf
(fetching an image, delivering a callback), each with the ports it may be reached on.

An entry is a host name, an IP or a CIDR, optionally followed by ``:PORT`` or ``:FIRST-LAST``
(``127.0.0.1:8765``, ``10.0.0.0/8:8080-8090``, ``images.internal:8443``, ``[::1]:8765``, ``[fd00::/8]:9000-9100``).
An entry without a port allows only 80 and 443 there: allow-listing a host must never open its database or admin
ports (5432, 6379...) to whoever can submit a URL. Public addresses are not governed by this list."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WEB_PORTS: tuple[tuple[int, int], ...] = ((80, 80), (443, 443))


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a host name or a network, and the port ranges it may be reached on."""

    text: str
    host: str | None
    network: IPNetwork | None
    ports: tuple[tuple[int, int], ...] = WEB_PORTS

    def allows_port(self, port: int | None) -> bool:
        """Whether ``port`` is one of this entry's; None (no port in question) passes."""
        return port is None or any(first <= port <= last for first, last in self.ports)

    def matches_host(self, host: str) -> bool:
        return self.host is not None and self.host == host.lower().rstrip(".")

    def matches_ip(self, ip: IPAddress) -> bool:
        return self.network is not None and self.network.version == ip.version and ip in self.network


def _ports(text: str, entry: str) -> tuple[tuple[int, int], ...]:
    first_text, _, last_text = text.partition("-")
    try:
        first, last = int(first_text), int(last_text or first_text)
    except ValueError:
        raise ValueError(f"allow-list entry {entry!r}: {text!r} is not a port or a port range like 8080-8090") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"allow-list entry {entry!r}: ports run from 1 to 65535, first to last")
    return ((first, last),)


def parse_entry(entry: str) -> AllowEntry:
    """One entry as written in the setting; raises ValueError naming the entry when it cannot be read."""
    text = entry.strip()
    if not text:
        raise ValueError("an allow-list entry is empty")
    where, ports = text, WEB_PORTS
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"allow-list entry {entry!r}: write an IPv6 address with a port as [::1]:8765")
        where = inside
        if rest:
            ports = _ports(rest[1:], entry)
    elif text.count(":") == 1:
        where, port_text = text.split(":")
        ports = _ports(port_text, entry)
    # More than one colon without brackets: an IPv6 address or network, without a port.
    try:
        return AllowEntry(text=text, host=None, network=ipaddress.ip_network(where, strict=False), ports=ports)
    except ValueError:
        pass
    host = where.lower().rstrip(".")
    if not host or any(char in host for char in "/:@ ") or "/" in where:
        raise ValueError(f"allow-list entry {entry!r} is neither a host name, an IP nor a CIDR")
    return AllowEntry(text=text, host=host, network=None, ports=ports)


def parse_allowlist(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    return tuple(parse_entry(entry) for entry in entries if entry.strip())
