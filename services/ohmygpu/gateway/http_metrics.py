"""Counting HTTP requests for /metrics: plain ASGI around the whole app, so nothing is buffered
(a stream's chunks pass as they come) and refused requests (401, 403, 413, ...) count too.

A request is labelled with its route's path template (`/v1/store/models/{name:path}`), never its
raw path, so the label's values are as many as the routes: the route the router matched
(Starlette sets `scope["route"]`), else, for a request answered before routing (the security
layer's refusals), the route that would have matched, else "other" (404s). The duration runs
from the request's arrival to its answer's last byte. WebSockets are not counted here (the
event stream's subscribers are a gauge of their own).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER = "other"
# Method label values: the methods HTTP defines; anything else a client sends is "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


def route_label(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route serving (or that would serve) the request in `scope`;
    "other" when none matches. A full match wins over a partial one (a 405), as in routing."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    partial = None
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL and hasattr(candidate, "path"):
            return str(candidate.path)
        if match is Match.PARTIAL and partial is None and hasattr(candidate, "path"):
            partial = str(candidate.path)
    return partial or OTHER


def method_label(method: str) -> str:
    return method if method in _METHODS else OTHER


class HttpMetricsMiddleware:
    """Observe each HTTP request's route, method, status and duration into `metrics`
    (daemon/metrics.py `Metrics.observe_http`)."""

    def __init__(self, app: ASGIApp, metrics: Any, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        done = False

        def observe(code: int) -> None:
            nonlocal done
            if not done:
                done = True
                self.metrics.observe_http(route_label(scope, self.routes), method_label(scope.get("method", "")),
                                          code, time.perf_counter() - started)

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                observe(status)

        try:
            await self.app(scope, receive, counted)
        except BaseException:
            observe(status or 500)  # the error middleware outside answers 500
            raise
        # The app ended without finishing its answer: the client went away (mid-stream: the
        # status it was sent; before any answer: 499, as nginx counts a client that closed).
        observe(status or 499)
