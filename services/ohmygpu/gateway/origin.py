"""Who is calling, from the headers: the Host a request names (DNS rebinding) and the Origin
of a browser's request (cross-site pages driving the daemon).

A page on any site can make the browser send "simple" requests (POST with a text/plain body,
no preflight) to 127.0.0.1. The browser says where they come from in `Origin` and
`Sec-Fetch-Site`; a request that changes state or runs a model from an origin that is neither
the daemon's own nor one configured in OMG_CORS_ORIGINS is refused. Clients that are not
browsers (curl, SDKs) send neither header and are not affected.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from ohmygpu.core.settings import Settings, split_list

# A DNS name (letters, digits, '-', '_' as some hostnames have, dots), or an IPv4 address.
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?")
_PORT = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Methods that read only; everything else changes state or runs a model.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def parse_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or an origin's host part) as (lower-case host, port or None); None when
    it is anything but a DNS name, an IPv4 address or a bracketed IPv6 address, followed by
    nothing but an optional decimal port ("127.0.0.1:1@evil.com" and "127.0.0.1:evil" are None)."""
    v = value.lower()
    if v.startswith("["):
        end = v.find("]")
        host, rest = v[1:end], v[end + 1:]
        if end < 0 or "%" in host:  # no zone ids: nothing a browser sends
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, port = v.partition(":")
        rest = sep + port
        if not _NAME.fullmatch(host) or len(host) > 253:
            return None
    if not rest:
        return host, None
    if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or not 0 < int(rest[1:]) < 65536:
        return None
    return host, int(rest[1:])


def _header(scope_headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in scope_headers:
        if key == name:
            return value.decode("latin-1")
    return None


class HostGuard:
    """The Host header on a loopback listener must name this machine (ollama CVE-2024-28224)."""

    def __init__(self, settings: Settings) -> None:
        self.names = {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()}
        for entry in split_list(settings.allowed_hosts):
            parsed = parse_host(entry)
            if parsed is not None:
                self.names.add(parsed[0])

    def allows(self, host_header: str | None) -> bool:
        parsed = parse_host(host_header.strip()) if host_header else None
        if parsed is None:
            return False
        name = parsed[0]
        if name in self.names:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


class OriginGuard:
    """Same-origin and configured-origin browser requests pass; other browser requests that
    are not plain reads are refused."""

    def __init__(self, settings: Settings) -> None:
        self.origins = {o.lower().rstrip("/") for o in split_list(settings.cors_origins)}
        self.any = "*" in self.origins  # an explicit choice of whoever configured it

    def refusal(self, method: str, scheme: str, headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why this request is refused, or None when it may go on."""
        if method in SAFE_METHODS:
            return None
        return self._cross_site(scheme, headers)

    def websocket_refusal(self, scheme: str, headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why this WebSocket upgrade is refused, or None. A WebSocket is not bound by the
        same-origin policy: any page can open one to 127.0.0.1 with the user's browser, and
        read what it says (cross-site WebSocket hijacking). So the upgrade, a GET, is held to
        the rule of a request that changes state: only the daemon's own pages and configured
        origins."""
        return self._cross_site({"ws": "http", "wss": "https"}.get(scheme, scheme), headers)

    def _cross_site(self, scheme: str, headers: list[tuple[bytes, bytes]]) -> str | None:
        origin = _header(headers, b"origin")
        site = (_header(headers, b"sec-fetch-site") or "").strip().lower()
        if origin is None:
            # Browsers send Origin with every cross-origin POST; a cross-site fetch without
            # one (an old browser, a stripped header) is still refused by Sec-Fetch-Site.
            if site in ("cross-site", "same-site"):
                return "cross-site request refused; allow its origin with OMG_CORS_ORIGINS"
            return None
        origin = origin.strip().lower()
        if self.any or origin.rstrip("/") in self.origins or self._same_origin(origin, scheme, headers):
            return None
        return (f"cross-origin request from {origin[:100]!r} refused; "
                "allow the origin with OMG_CORS_ORIGINS")

    @staticmethod
    def _same_origin(origin: str, scheme: str, headers: list[tuple[bytes, bytes]]) -> bool:
        """The page was served by this daemon: the Origin names the scheme, host and port the
        request was sent to (as the browser builds both from the same URL)."""
        o_scheme, sep, authority = origin.partition("://")
        host_header = _header(headers, b"host")
        if not sep or o_scheme != scheme or host_header is None:
            return False
        mine, theirs = parse_host(host_header.strip()), parse_host(authority)
        if mine is None or theirs is None:
            return False
        default = _DEFAULT_PORTS.get(scheme)
        return (mine[0], mine[1] or default) == (theirs[0], theirs[1] or default)
