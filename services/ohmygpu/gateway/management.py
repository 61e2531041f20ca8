"""The management API, derived from the protos' `google.api.http` rules (grpc-gateway style).

Each rule becomes a route that builds the request message from the JSON body, query string
and path variables, calls the daemon API method gRPC clients reach (daemon/api/), and answers with the
message's JSON mapping. Server-streaming methods answer newline-delimited `{"result": ...}`
objects, as grpc-gateway does. Nothing here names a method: a new rule in a proto is a new route.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor, json_format, message_factory
from ohmygpu.core.errors import InvalidArgument, OmgError, Unimplemented
from ohmygpu.daemon.api import SERVICES
from ohmygpu.gateway.body import read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.streaming import ClosingStreamingResponse, primed
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_VAR = re.compile(r"\{(\w+)(=([^}]*))?\}")


def starlette_path(template: str) -> str:
    """"/v1/store/models/{name=**}" -> "/v1/store/models/{name:path}"."""
    def repl(m: re.Match[str]) -> str:
        return "{%s:path}" % m.group(1) if m.group(3) and "**" in m.group(3) else "{%s}" % m.group(1)

    return _VAR.sub(repl, template)


def http_rule(method: descriptor.MethodDescriptor) -> tuple[str, str, str] | None:
    """(verb, path template, body) of a method's http rule, or None."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return verb.upper(), getattr(rule, verb), rule.body


def to_json(message: Any) -> dict[str, Any]:
    """A message's JSON mapping, as every management route (and the event stream) answers it."""
    return json_format.MessageToDict(message)


def query_fields(message: descriptor.Descriptor, params: QueryParams) -> dict[str, Any]:
    """The query string as JSON fields of a request message: a repeated field takes every value
    given for it (`?kinds=EVENT_KIND_LOAD&kinds=EVENT_KIND_UNLOAD`), any other field the last."""
    repeated = {name for f in message.fields if _is_repeated(f) for name in (f.name, f.json_name)}
    return {key: params.getlist(key) if key in repeated else params[key] for key in params.keys()}


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    # `is_repeated` replaced `label` (gone in protobuf 7); 6.x releases may have only `label`.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)  # type: ignore[attr-defined]


def parse_request(cls: Any, data: dict[str, Any]) -> Any:
    """A request message of class `cls` from JSON fields; raises InvalidArgument."""
    try:
        return json_format.ParseDict(data, cls(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise InvalidArgument(f"invalid request for {cls.DESCRIPTOR.name.removesuffix('Request')}: "
                              f"{str(e)[:200]}") from None


def _handler(gw: Gateway, service_name: str, method: descriptor.MethodDescriptor, body_rule: str) -> Callable[[Request], Any]:
    request_cls = message_factory.GetMessageClass(method.input_type)
    streaming = method.server_streaming
    # A bytes field (TranscribeRequest.audio) is base64 text in JSON: only the body's byte limit
    # bounds it, not the limit on characters of text.
    carries_bytes = any(f.type == f.TYPE_BYTES for f in method.input_type.fields)

    async def handle(request: Request) -> Response:
        data: dict[str, Any] = {}
        limits = gw.body_limit
        if carries_bytes:
            limits = dataclasses.replace(limits, max_text_chars=limits.max_bytes)
        if body_rule == "*":
            data.update(await read_json(request, limits))
        elif body_rule:  # the body is one field of the request message
            data[body_rule] = await read_json(request, limits)
        for key, value in query_fields(method.input_type, request.query_params).items():
            data.setdefault(key, value)
        data.update(request.path_params)
        message = parse_request(request_cls, data)
        fn = getattr(gw.api.service(service_name), method.name, None)
        if fn is None:  # an RPC of the contract this daemon does not serve yet: as gRPC answers it
            raise Unimplemented(f"{service_name}.{method.name} is not served by this daemon")
        if not streaming:
            return JSONResponse(to_json(await fn(message)))
        if "text/event-stream" in request.headers.get("accept", ""):
            # Server-sent events for browsers and EventSource clients; the stream stays open.
            return ClosingStreamingResponse(_sse(fn(message)), media_type="text/event-stream",
                                            headers={"Cache-Control": "no-cache"})
        messages = await primed(fn(message))
        return ClosingStreamingResponse(_ndjson(messages), media_type="application/x-ndjson")

    return handle


async def _ndjson(messages: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for m in messages:
            yield json.dumps({"result": to_json(m)}) + "\n"
    except OmgError as e:
        yield json.dumps({"error": json.loads(stream_error_line(e, "management"))}) + "\n"


async def _sse(messages: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for m in messages:
            data = to_json(m)
            kind = data.get("kind", "message")
            yield f"id: {data.get('id', '')}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
    except OmgError as e:
        yield f"event: error\ndata: {stream_error_line(e, 'management')}\n\n"


def management_routes(gw: Gateway) -> list[Route]:
    """One route per http rule of the daemon's services."""
    routes = []
    for name, service in SERVICES.items():
        for method in service.methods:
            rule = http_rule(method)
            if rule is None:
                continue
            verb, template, body = rule
            routes.append(Route(starlette_path(template), _handler(gw, name, method, body),
                                methods=[verb], name=f"{service.name}.{method.name}"))
    # Custom methods ("/v1/jobs/{id}:cancel") first, so "{id}" of a plain route cannot swallow them.
    routes.sort(key=lambda r: ":" not in r.path)
    return routes
