"""The HTTP application: OpenAI, Ollama, Anthropic and management routes behind one security layer.

The security layer is plain ASGI (no buffering of streamed answers) and checks, in order:
the Host header against DNS rebinding (ollama CVE-2024-28224), the Origin of browser requests
that change state or run a model (cross-site pages; gateway/origin.py), the bearer token when
one is configured (constant-time; `Authorization: Bearer`, or Anthropic's `x-api-key`), and
CORS for configured origins only. A WebSocket upgrade
(the event stream) gets the same checks, its Origin held to the rule of a state-changing
request, and its token also taken from the "bearer" subprotocol browsers can set
(gateway/operations.py). The probes (/livez, /readyz) and the console's static files (/ui/,
gateway/console/) need no token; /metrics is management.
"""

from __future__ import annotations

import logging
from re import Pattern

from ohmygpu.core import access
from ohmygpu.core.errors import (
    InvalidArgument,
    NotFound,
    OmgError,
    PermissionDenied,
)
from ohmygpu.core.netaddr import is_loopback, split_addr
from ohmygpu.core.settings import Settings, split_list
from ohmygpu.daemon.api import DaemonAPI
from ohmygpu.gateway.a1111 import A1111Routes
from ohmygpu.gateway.anthropic import AnthropicRoutes
from ohmygpu.gateway.audio import AudioRoutes
from ohmygpu.gateway.console import CONSOLE_PATHS, console_routes
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.disconnect import CancelOnDisconnect
from ohmygpu.gateway.embeddings import EmbeddingRoutes
from ohmygpu.gateway.images import ImageRoutes
from ohmygpu.gateway.speech import SpeechRoutes
from ohmygpu.gateway.errors import error_response
from ohmygpu.gateway.http_metrics import HttpMetricsMiddleware
from ohmygpu.gateway.management import management_routes
from ohmygpu.gateway.ollama import OllamaRoutes
from ohmygpu.gateway.openai import OpenAIRoutes
from ohmygpu.gateway.openapi import openapi_route
from ohmygpu.gateway.rerank import RerankRoutes
from ohmygpu.gateway.responses import ResponsesRoutes
from ohmygpu.gateway.operations import (
    METRICS_PATH,
    PROBE_PATHS,
    OperationsRoutes,
    deny_upgrade,
    subprotocol_token,
)
from ohmygpu.gateway.origin import HostGuard, OriginGuard
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("ohmygpu.gateway")


class SecurityMiddleware:
    """Host check on loopback listeners, Origin check on browser requests, token check when
    configured."""

    def __init__(self, app: ASGIApp, settings: Settings,
                 admin_routes: list[tuple[str, Pattern[str]]] | None = None,
                 open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.open_paths = open_paths  # answered without a token (the probes)
        self.token = settings.token
        self.admin_token = settings.admin_token
        self.admin_routes = admin_routes or []
        host, _ = split_addr(settings.http_addr)
        self.check_host = is_loopback(host)
        self.hosts = HostGuard(settings)
        self.origins = OriginGuard(settings)

    def _host_ok(self, scope: Scope) -> bool:
        hosts = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"]
        # Exactly one (RFC 9112 3.2): with two, the one checked might not be the one obeyed.
        return len(hosts) == 1 and self.hosts.allows(hosts[0])

    def _is_admin(self, scope: Scope) -> bool:
        method, path = scope.get("method", ""), scope.get("path", "")
        if access.is_ollama_admin(method, path):
            return True
        return any(verb == method and pattern.match(path) for verb, pattern in self.admin_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error: OmgError | None = None
        if self.check_host and not self._host_ok(scope):
            error = PermissionDenied("Host header not allowed; add it to OMG_ALLOWED_HOSTS")
        elif (refusal := self.origins.refusal(scope.get("method", ""), scope.get("scheme", "http"),
                                              scope.get("headers", []))) is not None:
            error = PermissionDenied(refusal)
        elif (self.token or self.admin_token) and scope.get("method") != "OPTIONS" \
                and scope.get("path") not in self.open_paths:
            headers = dict(scope.get("headers", ()))
            auth = access.presented(headers.get(b"authorization", b"").decode("latin-1"),
                                    headers.get(b"x-api-key", b"").decode("latin-1"))
            error = access.check(auth, admin=self._is_admin(scope), token=self.token, admin_token=self.admin_token)
        if error is not None:
            await error_response(error, scope.get("path", ""))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An upgrade: Host, Origin (cross-site WebSocket hijacking) and token, refused before
        the handshake completes."""
        error: OmgError | None = None
        if self.check_host and not self._host_ok(scope):
            error = PermissionDenied("Host header not allowed; add it to OMG_ALLOWED_HOSTS")
        elif (refusal := self.origins.websocket_refusal(scope.get("scheme", "ws"), scope.get("headers", []))) is not None:
            error = PermissionDenied(refusal)
        elif self.token or self.admin_token:
            auth = dict(scope.get("headers", ())).get(b"authorization", b"").decode("latin-1")
            if not auth and (given := subprotocol_token(list(scope.get("subprotocols") or []))) is not None:
                auth = f"Bearer {given}"
            error = access.check(auth or None, admin=False, token=self.token, admin_token=self.admin_token)
        if error is not None:
            await deny_upgrade(scope, receive, send, error)
            return
        await self.app(scope, receive, send)


async def _omg_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OmgError)
    return error_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    err: OmgError = NotFound(f"no route for {request.method} {request.url.path}") if status == 404 \
        else InvalidArgument(str(detail))
    err.http_status = status
    return error_response(err, request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    from ohmygpu.core.errors import WorkerFailed

    return error_response(WorkerFailed("internal error; see the daemon log"), request.url.path)


async def _root(request: Request) -> Response:
    return Response("ohmygpu is running", media_type="text/plain")


def build_app(settings: Settings, api: DaemonAPI) -> ASGIApp:
    """The HTTP API (OpenAI, Ollama, Anthropic, management) over the daemon API `api`."""
    gw = Gateway(settings=settings, api=api)
    from starlette.routing import Route

    routes = [Route("/", _root, methods=["GET", "HEAD"])]
    routes += OpenAIRoutes(gw).routes() + OllamaRoutes(gw).routes() + management_routes(gw)
    routes += EmbeddingRoutes(gw).routes() + AudioRoutes(gw).routes() + ImageRoutes(gw).routes()
    routes += SpeechRoutes(gw).routes() + RerankRoutes(gw).routes() + A1111Routes(gw).routes()
    routes += AnthropicRoutes(gw).routes() + ResponsesRoutes(gw).routes()
    routes += OperationsRoutes(gw).routes() + console_routes()
    routes.append(openapi_route(routes))  # GET /openapi.json: the document of all of the above
    # Management routes come from the http rules of the services' methods: the admin ones are
    # the routes of access.ADMIN_METHODS (route names are "Service.Method"), and /metrics.
    admin_routes = [(verb, route.path_regex) for route in routes if isinstance(route, Route)
                    and (f"ohmygpu.api.v1.{route.name}" in access.ADMIN_METHODS or route.path == METRICS_PATH)
                    for verb in route.methods or ()]
    middleware = [Middleware(HttpMetricsMiddleware, metrics=api.metrics, routes=routes),
                  Middleware(SecurityMiddleware, settings=settings, admin_routes=admin_routes,
                             open_paths=PROBE_PATHS | CONSOLE_PATHS),
                  Middleware(CancelOnDisconnect)]
    origins = split_list(settings.cors_origins)
    if origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                                     allow_headers=["*"]))
    from starlette.exceptions import HTTPException

    return Starlette(routes=routes, middleware=middleware, exception_handlers={
        OmgError: _omg_error, HTTPException: _http_error, Exception: _unexpected})


__all__ = ["build_app", "JSONResponse"]
