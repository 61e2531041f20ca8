"""Host and Origin parsing of the HTTP edge (gateway/origin.py), without a daemon."""

from __future__ import annotations

import pytest
from ohmygpu.core.settings import Settings
from ohmygpu.gateway.origin import HostGuard, OriginGuard, parse_host


@pytest.mark.parametrize("value,parsed", [
    ("127.0.0.1", ("127.0.0.1", None)),
    ("127.0.0.1:11434", ("127.0.0.1", 11434)),
    ("LocalHost:80", ("localhost", 80)),
    ("[::1]", ("::1", None)),
    ("[::1]:11434", ("::1", 11434)),
    ("my_host.lan.", ("my_host.lan.", None)),
])
def test_hosts_parsed(value: str, parsed: tuple[str, int | None]) -> None:
    assert parse_host(value) == parsed


@pytest.mark.parametrize("value", [
    "", ":80", "127.0.0.1:11434@evil.com", "127.0.0.1:evil", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
    "127.0.0.1:+80", "127.0.0.1:８０", "127.0.0.1:1:2", "a b", "a/b", "user@host", "host#frag", "host?q",
    "[::1", "[::1]x", "[::1]:", "[fe80::1%eth0]", "[evil.com]", "::1", "evil..com", "\u0131ocalhost",
])
def test_anything_else_is_not_a_host(value: str) -> None:
    assert parse_host(value) is None


def _settings(**env: str) -> Settings:
    return Settings.load(environ={"OMG_HOME": "/nonexistent/omg", "OMG_CONFIG": "/nonexistent/c.toml", **env})


def test_host_guard() -> None:
    guard = HostGuard(_settings(OMG_ALLOWED_HOSTS="box.lan, [fd00::5]:1"))
    for ok in ("localhost:1", "127.0.0.1", "127.8.9.1:11434", "[::1]:2", "box.lan:11434", "BOX.LAN", "[fd00::5]"):
        assert guard.allows(ok), ok
    for bad in (None, "", "evil.com", "127.0.0.1:1@evil.com", "box.lan.evil.com", "localhost:evil"):
        assert not guard.allows(bad), bad


def _h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode("latin-1")) for k, v in headers.items()]


def test_origin_guard() -> None:
    guard = OriginGuard(_settings(OMG_CORS_ORIGINS="http://console.example:8080/"))
    assert guard.refusal("GET", "http", _h(origin="http://evil.example")) is None  # reads pass
    assert guard.refusal("POST", "http", _h(host="127.0.0.1:11434")) is None  # not a browser
    assert guard.refusal("POST", "http", _h(host="127.0.0.1:11434", origin="http://127.0.0.1:11434")) is None
    assert guard.refusal("POST", "https", _h(host="localhost", origin="https://localhost:443")) is None
    assert guard.refusal("POST", "http", _h(origin="http://console.example:8080")) is None
    for refused in (_h(host="127.0.0.1:11434", origin="http://evil.example"),
                    _h(host="127.0.0.1:11434", origin="null"),
                    _h(host="127.0.0.1:11434", origin="http://127.0.0.1:11435"),  # another port
                    _h(host="127.0.0.1:11434", origin="https://127.0.0.1:11434"),  # another scheme
                    _h(host="127.0.0.1:11434", origin="http://127.0.0.1:11434@evil.example"),
                    _h(host="127.0.0.1:11434", origin="http://console.example"),  # port differs
                    _h(host="127.0.0.1:11434", sec_fetch_site="cross-site")):
        assert guard.refusal("POST", "http", refused), refused
        assert guard.refusal("DELETE", "http", refused), refused
    assert OriginGuard(_settings(OMG_CORS_ORIGINS="*")).refusal("POST", "http", _h(origin="http://x")) is None
