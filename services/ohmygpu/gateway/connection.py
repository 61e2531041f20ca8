"""HTTP/1.1 connections with bounds: uvicorn's httptools protocol, plus what it lacks.

uvicorn reads a request line and headers of any size into memory (httptools joins a header
value's pieces as they come) and never times out a client that drips its headers or stalls
its body. Here, per connection:

- the request line is at most `max_url_bytes` (414), the line plus headers at most
  `max_head_bytes` and `max_headers` lines (431): memory stays flat whatever is sent;
- the head must arrive within `header_timeout_s` (408), a body may not stall longer than
  `body_timeout_s` between reads (408); reads paused by flow control do not count;
- at most `max_connections` are open: a new one closes the connection that has waited longest
  without a request in flight (a slowloris, an idle keep-alive), so drippers cannot starve
  real clients; when every connection has a request in flight, the new one gets 503.

Only the read side changes: responses (the per-token stream) go through uvicorn unchanged. A
WebSocket upgrade's head is bounded like any other; the connection then passes to uvicorn's
websockets protocol (bounded messages, pings) and counts toward `max_connections`, but is never
the one closed to make room (it is a stream being served, like a request in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from ohmygpu.core.errors import InvalidArgument, OmgError, PayloadTooLarge
from ohmygpu.core.settings import Settings
from ohmygpu.gateway.errors import dialect_for, error_body
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("ohmygpu.gateway")


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on what one HTTP client may make the daemon hold."""

    max_head_bytes: int = 64 << 10
    max_url_bytes: int = 16 << 10
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 512

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(max_head_bytes=settings.http_max_header_kb << 10, max_url_bytes=settings.http_max_url_kb << 10,
                   max_headers=settings.http_max_headers, header_timeout_s=settings.http_header_timeout_s,
                   body_timeout_s=settings.http_body_timeout_s, max_connections=settings.http_max_connections)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that breaks a bound."""

    def __init__(self, status: int, error: OmgError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Nagle off: a response is a head and then body writes, and a small write held back until
    the client ACKs the last one costs its delayed ACK (40 ms) per keep-alive request."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def protocol_for(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn.Config(http=...)."""
    return type("OmgHttpProtocol", (BoundedHttpProtocol,), {"limits": limits})


class BoundedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0  # head bytes received after the chunk the head began in
        self._url_bytes = 0
        self._header_count = 0
        self._header_size = 0
        self._body_open = False  # headers done, body not yet complete
        self._last_read = 0.0  # when body bytes last arrived
        self._since = 0.0  # when this connection last became free of requests (for eviction)
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._pending: _Refused | None = None  # what a parser callback refused

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _no_delay(transport)
        self._since = self.loop.time()
        # A connection that never sends a head is timed like one that drips it.
        self._set_timer(self.limits.header_timeout_s, self._head_timed_out)
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _make_room(self) -> None:
        if len(self.connections) <= self.limits.max_connections:
            return
        free = [c for c in self.connections if c is not self and isinstance(c, BoundedHttpProtocol)
                and c._free() and not c.transport.is_closing()]
        if free:
            victim = min(free, key=lambda c: c._since)
            log.info("HTTP connection limit (%d) reached: closing the longest-idle connection",
                     self.limits.max_connections)
            victim._cancel_timer()
            victim.transport.close()
            return
        log.warning("HTTP connection limit (%d) reached with every connection busy; refusing one",
                    self.limits.max_connections)
        self._answer_and_close(503, "", b"server busy: too many open connections (OMG_HTTP_MAX_CONNECTIONS); retry")

    def _free(self) -> bool:
        """No request of this connection is being served (it waits for, or reads, a head)."""
        return self.cycle is None or self.cycle.response_complete

    # Reading

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the parser's refusals answered as what they are
        # (uvicorn answers every parser error with a bare 400).
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._pending is not None:
                self._answer_error(self._pending.status, self._pending.error)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                # A WebSocket (GET /v1/events): its head was read within the bounds above; from
                # here uvicorn's websockets protocol owns the connection, with the message size
                # and ping timeout daemon/server.py gives it. Our timers must not fire on it.
                self._cancel_timer()
                self._head_open = self._body_open = False
                self.handle_websocket_upgrade()
                return
            self._unsupported_upgrade_warning()
        if self._head_open and self._head_bytes > self.limits.max_head_bytes and not self._refused:
            self._answer_error(431, PayloadTooLarge(self._head_too_large))

    @property
    def _head_too_large(self) -> str:
        return f"request headers are over the {self.limits.max_head_bytes} byte limit (OMG_HTTP_MAX_HEADER_KB)"

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_bytes, self._url_bytes = True, 0, 0
        self._header_count = self._header_size = 0
        if self._timer is None:  # a keep-alive connection's next request
            self._set_timer(self.limits.header_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._fail(414, f"request URL is over the {self.limits.max_url_bytes} byte limit (OMG_HTTP_MAX_URL_KB)")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Exact bounds; data_received's byte count bounds memory while a header is still arriving.
        self._header_count += 1
        self._header_size += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._fail(431, f"more than {self.limits.max_headers} request headers (OMG_HTTP_MAX_HEADERS)")
        if self._header_size + self._url_bytes > self.limits.max_head_bytes:
            self._fail(431, self._head_too_large)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_timer()
        super().on_headers_complete()
        self._body_open = True
        self._last_read = self.loop.time()
        self._set_timer(self.limits.body_timeout_s, self._body_check)

    def on_body(self, body: bytes) -> None:
        self._last_read = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_open = False
        self._cancel_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._since = self.loop.time()
        super().on_response_complete()

    # Bounds broken

    def _fail(self, status: int, message: str) -> None:
        """Stop parsing (from inside a parser callback); data_received answers `status`."""
        error: OmgError = PayloadTooLarge(message) if status == 431 else InvalidArgument(message)
        self._pending = _Refused(status, error)
        raise self._pending

    def _answer_error(self, status: int, error: OmgError) -> None:
        """Answer `error` with `status` in the dialect of the request's path (as far as it
        was read), and close."""
        error.http_status = status
        url = getattr(self, "url", b"")
        path = url[:200].decode("latin-1", "replace").split("?", 1)[0] if isinstance(url, bytes) else ""
        log.info("HTTP request refused (%d): %s", status, error.message)
        self._answer_and_close(status, "application/json", json.dumps(error_body(error, dialect_for(path))).encode())

    def _answer_and_close(self, status: int, content_type: str, body: bytes) -> None:
        self._refused = True
        self._cancel_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            # A request is being served: the app learns the client is gone, and its own
            # answer, if any, is dropped instead of interleaved with this one.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if not self.transport.is_closing():
            if self.cycle is None or not self.cycle.response_started:
                head = STATUS_LINE[status] + (b"content-type: " + content_type.encode() + b"\r\n"
                                              if content_type else b"content-type: text/plain; charset=utf-8\r\n")
                if status == 503:
                    head += b"retry-after: 1\r\n"
                self.transport.write(head + b"content-length: " + str(len(body)).encode() +
                                     b"\r\nconnection: close\r\n\r\n" + body)
            self.transport.close()

    # Timers

    def _set_timer(self, delay: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._free():
            # A pipelined head behind a request still being answered: that one goes on.
            if not self.transport.is_closing():
                self._set_timer(self.limits.header_timeout_s, self._head_timed_out)
            return
        if self._head_open:
            self._answer_error(408, InvalidArgument(
                f"request headers not received within {self.limits.header_timeout_s:g}s (OMG_HTTP_HEADER_TIMEOUT)"))
        else:
            self._cancel_timer()
            self.transport.close()  # nothing sent at all: no answer owed

    def _body_check(self) -> None:
        self._timer = None
        if not self._body_open or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._last_read = now  # the app is not reading yet: the client is not stalling
        left = self._last_read + self.limits.body_timeout_s - now
        if left > 0:
            self._timer = self.loop.call_later(left, self._body_check)
            return
        self._answer_error(408, InvalidArgument(
            f"request body stalled for {self.limits.body_timeout_s:g}s (OMG_HTTP_BODY_TIMEOUT)"))
