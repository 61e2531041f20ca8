"""Operations over HTTP: liveness and readiness probes, Prometheus metrics, and the event stream
as a WebSocket.

- `GET /livez`: 200 "ok" whenever the event loop answers (nothing else is checked: a probe that
  restarts the daemon must not fire because a model is slow to load).
- `GET /readyz`: 200 once the daemon has finished starting (store open, listeners up, restored
  runs tried), else 503 with the reason as JSON; 503 again while it shuts down.
  Both are open without a token (SecurityMiddleware's `open_paths`: probes carry none, and the
  answers say nothing but "up" and "starting"); the Host check applies to them as everywhere.
- `GET /metrics`: the text exposition of daemon/metrics.py; guarded like management (the admin
  token when OMG_ADMIN_TOKEN is set, else OMG_TOKEN when set).
- `GET /v1/events` upgraded to a WebSocket: each event as one JSON text frame, the same JSON as
  the server-sent events' `data:`; StreamEventsRequest's fields from the query string as for the
  HTTP stream (`afterId`, `kinds`, repeated). The token, the Host and the Origin are checked by
  SecurityMiddleware on the upgrade (see gateway/app.py), before this endpoint runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from ohmygpu.api.v1 import events_pb2
from ohmygpu.core.errors import OmgError
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import error_response, stream_error_line
from ohmygpu.gateway.management import parse_request, query_fields, to_json
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

# Paths answered without a token (probes).
PROBE_PATHS = frozenset({"/livez", "/readyz"})
METRICS_PATH = "/metrics"
EVENTS_PATH = "/v1/events"
# Browsers cannot set headers on a WebSocket; they pass the token as a subprotocol instead:
# `new WebSocket(url, ["bearer", token])`. The daemon answers with the subprotocol "bearer" and
# never echoes the token.
BEARER_SUBPROTOCOL = "bearer"


def subprotocol_token(subprotocols: list[str]) -> str | None:
    """The token a browser gave as the subprotocol after "bearer", or None."""
    names = [name.strip() for entry in subprotocols for name in entry.split(",")]  # one header or several
    for i, name in enumerate(names[:-1]):
        if name == BEARER_SUBPROTOCOL:
            return names[i + 1]
    return None


class OperationsRoutes:
    """/livez, /readyz, /metrics and the WebSocket of /v1/events."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.api = gw.api

    def routes(self) -> list[BaseRoute]:
        return [Route("/livez", self.livez, methods=["GET", "HEAD"]),
                Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
                Route(METRICS_PATH, self.metrics, methods=["GET"]),
                WebSocketRoute(EVENTS_PATH, self.events)]

    async def livez(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        state = self.api.readiness.state()
        if state.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": state.reason}, status_code=503,
                            headers={"Retry-After": "1"})

    async def metrics(self, request: Request) -> Response:
        metrics = self.api.metrics
        return Response(await metrics.render(), headers={"Content-Type": metrics.content_type})

    async def events(self, websocket: WebSocket) -> None:
        cls = events_pb2.StreamEventsRequest
        try:
            request = parse_request(cls, query_fields(cls.DESCRIPTOR, websocket.query_params))
        except OmgError as e:
            await deny_upgrade(websocket.scope, websocket.receive, websocket.send, e)
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in offered else None)
        stream = self.api.service("EventService").StreamEvents(request)
        sender = asyncio.create_task(_send_events(websocket, stream))
        reader = asyncio.create_task(_until_disconnect(websocket))
        try:
            # Whichever ends first ends both: a client gone (its subscription must not wait
            # for the next event to notice), or the stream over (the daemon stopping).
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            await stream.aclose()  # leaves the bus now (its `finally` drops the subscriber)
        if reader.done() and not reader.cancelled() and reader.exception() is None:
            return  # the client closed; nothing more to say
        with contextlib.suppress(Exception):
            await websocket.close(1000)


async def _send_events(websocket: WebSocket, stream: AsyncIterator[Any]) -> None:
    try:
        async for event in stream:
            await websocket.send_text(json.dumps(to_json(event)))
    except OmgError as e:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"error": json.loads(stream_error_line(e, "management"))}))


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and drop) what the client sends until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def deny_upgrade(scope: Scope, receive: Receive, send: Send, error: OmgError) -> None:
    """Refuse a WebSocket upgrade with `error` as an HTTP answer (its status and JSON body) where
    the server lets the app answer the handshake (ASGI's denial response), else with the bare
    403 a close before accepting gives."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await error_response(error, scope.get("path", ""))(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})
