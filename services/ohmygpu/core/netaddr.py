"""Listen addresses: "host:port" parsing and whether a host is this machine's loopback.

In core because both the daemon (which listens) and the gateway (whose Host check applies only
on loopback listeners) need them; in daemon/server.py they made an import circle with
gateway/app.py.
"""

from __future__ import annotations

import ipaddress

from ohmygpu.core.errors import InvalidArgument


def split_addr(addr: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") -> (host, port); raises InvalidArgument."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"address {addr!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
