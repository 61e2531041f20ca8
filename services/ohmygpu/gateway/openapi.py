"""The OpenAPI 3.0 document of the HTTP API, served at `/openapi.json`.

The management part is generated from the very descriptors gateway/management.py routes from
(the daemon API's services in gen/), following grpc-gateway's mapping (protoc-gen-openapiv2's,
which cannot be installed here):

- a rule's path template is the path; `{name=**}` is the parameter `{name}` (slashes allowed);
- body `*`: the request message is the body, less the fields bound in the path; body `field`:
  that field is the body; every other scalar, enum or repeated scalar field is a query
  parameter (a message field cannot be given in the query string: management.py does not parse
  dotted names);
- names are the proto3 JSON names (`lowerCamelCase`), as MessageToDict answers them;
- enums are their value names; 64-bit integers are decimal strings; bytes are base64; the
  well-known types take their JSON mapping (Timestamp: RFC 3339 text, Duration: "1.5s", Struct:
  an object, Value: anything, wrappers: their scalar);
- a server-streaming method answers newline-delimited `{"result": ...}` objects (an error after
  the stream started is one `{"error": Status}` line), or server-sent events when asked;
- an error is grpc-gateway's `Status`: `{"code", "message", "details"}`.

Answers leave out fields at their default value (proto3 JSON), so no response field is required;
every message is closed (`additionalProperties: false`): the parser refuses unknown fields and a
response carrying a field the document lacks is a document out of date.

The OpenAI and Ollama routes (and the other dialects') are listed from the routes the app
serves, with the summaries and schemas of gateway/openapi_dialects.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor
from ohmygpu.core.version import __version__ as VERSION
from ohmygpu.daemon.api import SERVICES
from ohmygpu.gateway.management import http_rule
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

PATH = "/openapi.json"
_VAR = re.compile(r"\{(\w+)(?:=[^}]*)?\}")
_FD = descriptor.FieldDescriptor
_INT64 = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"}
_SCALARS: dict[int, dict[str, Any]] = {
    _FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    _FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    _FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    _FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    _FD.TYPE_INT64: _INT64, _FD.TYPE_SINT64: _INT64, _FD.TYPE_SFIXED64: _INT64,
    _FD.TYPE_UINT64: _UINT64, _FD.TYPE_FIXED64: _UINT64,
    _FD.TYPE_BOOL: {"type": "boolean"},
    _FD.TYPE_STRING: {"type": "string"},
    _FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WRAPPERS = {"DoubleValue": _FD.TYPE_DOUBLE, "FloatValue": _FD.TYPE_FLOAT, "Int64Value": _FD.TYPE_INT64,
             "UInt64Value": _FD.TYPE_UINT64, "Int32Value": _FD.TYPE_INT32, "UInt32Value": _FD.TYPE_UINT32,
             "BoolValue": _FD.TYPE_BOOL, "StringValue": _FD.TYPE_STRING, "BytesValue": _FD.TYPE_BYTES}
# The well-known types by their JSON mapping (https://protobuf.dev/programming-guides/json/).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True},
    **{f"google.protobuf.{name}": _SCALARS[t] for name, t in _WRAPPERS.items()},
}
STATUS_SCHEMA = {"type": "object", "description": "An error (grpc-gateway's google.rpc.Status)",
                 "properties": {"code": {"type": "integer", "format": "int32",
                                         "description": "the gRPC status code"},
                                "message": {"type": "string"},
                                "details": {"type": "array", "items": {"type": "object"}}},
                 "required": ["code", "message"]}


def _ref(full_name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{full_name}"}


class Schemas:
    """JSON schemas of messages and enums, collected into `components/schemas` as referenced."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"google.rpc.Status": STATUS_SCHEMA}

    def field(self, field: descriptor.FieldDescriptor, *, single: bool = False) -> dict[str, Any]:
        """A field's schema (an element's when `single`)."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry and not single:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.field(value)}
        if _is_repeated(field) and not single:
            return {"type": "array", "items": self.field(field, single=True)}
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if field.message_type is not None:
            return self.message(field.message_type)
        return dict(_SCALARS[field.type])

    def enum(self, enum: descriptor.EnumDescriptor) -> dict[str, Any]:
        if enum.full_name not in self.components:
            self.components[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values]}
        return _ref(enum.full_name)

    def message(self, message: descriptor.Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placed first: a message may contain itself
            self.components[message.full_name] = self.object(message.fields)
        return _ref(message.full_name)

    def object(self, fields: Iterable[descriptor.FieldDescriptor]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False,
                "properties": {f.json_name: self.field(f) for f in fields}}


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 7; 6.x may have only `label`
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)  # type: ignore[attr-defined]


def _query_param(field: descriptor.FieldDescriptor) -> bool:
    """Whether `field` can be given in the query string: a scalar, an enum, a well-known type
    written as one string, or a repeated one of those."""
    if field.message_type is None:
        return True
    name = field.message_type.full_name
    return name in _WELL_KNOWN and _WELL_KNOWN[name].get("type") not in ("object", "array", None)


def _words(name: str) -> str:
    """"ListModels" -> "List models"."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: " " + m.group(1).lower(), name)


def operation(schemas: Schemas, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor,
              template: str, body: str) -> dict[str, Any]:
    """The OpenAPI operation of one http rule."""
    request = method.input_type
    in_path = _VAR.findall(template)
    params: list[dict[str, Any]] = []
    for name in in_path:
        field = request.fields_by_name[name]
        params.append({"name": name, "in": "path", "required": True, "schema": schemas.field(field)})
    op: dict[str, Any] = {"operationId": f"{service.name}_{method.name}", "tags": [service.name],
                          "summary": _words(method.name), "x-grpc-method": method.full_name}
    rest = [f for f in request.fields if f.name not in in_path]
    if body == "*":
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": schemas.object(rest) if in_path else schemas.message(request)}}}
        rest = []
    elif body:
        field = request.fields_by_name[body]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.field(field)}}}
        rest = [f for f in rest if f.name != body]
    for field in rest:
        if _query_param(field):
            schema = schemas.field(field)
            param = {"name": field.json_name, "in": "query", "required": False, "schema": schema}
            if schema.get("type") == "array":
                param.update(style="form", explode=True)
            params.append(param)
    if params:
        op["parameters"] = params
    result = schemas.message(method.output_type)
    if method.server_streaming:
        line = {"type": "object", "additionalProperties": False,
                "properties": {"result": result, "error": _ref("google.rpc.Status")}}
        op["description"] = ("Server-streaming: each line of the answer is one JSON object "
                             "(`{\"result\": ...}`, or `{\"error\": ...}` when the stream fails after it "
                             "started); with `Accept: text/event-stream`, server-sent events instead.")
        op["x-stream"] = True
        content = {"application/x-ndjson": {"schema": line},
                   "text/event-stream": {"schema": {"type": "string"}}}
    else:
        content = {"application/json": {"schema": result}}
    op["responses"] = {"200": {"description": "OK", "content": content},
                       "default": {"description": "An error", "content": {
                           "application/json": {"schema": _ref("google.rpc.Status")}}}}
    return op


def openapi_path(template: str) -> str:
    """"/v1/store/models/{name=**}" -> "/v1/store/models/{name}"."""
    return _VAR.sub(lambda m: "{%s}" % m.group(1), template)


def management_paths(schemas: Schemas) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for service in SERVICES.values():
        for method in service.methods:
            rule = http_rule(method)
            if rule is None:
                continue
            verb, template, body = rule
            paths.setdefault(openapi_path(template), {})[verb.lower()] = operation(
                schemas, service, method, template, body)
    return paths


def document(routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    """The whole document: the management API from the protos, then every other route of
    `routes` (the app's) from gateway/openapi_dialects.py."""
    from ohmygpu.gateway.openapi_dialects import dialect_paths

    schemas = Schemas()
    paths = management_paths(schemas)
    for path, ops in dialect_paths(routes, skip=paths).items():
        paths.setdefault(path, {}).update(ops)
    return {
        "openapi": "3.0.3",
        "info": {"title": "ohmygpu", "version": VERSION,
                 "description": "The daemon's HTTP API. The management routes are generated from the "
                                "protos' google.api.http rules (proto/ohmygpu/api/v1); the OpenAI, Ollama, "
                                "Anthropic and A1111 routes speak those APIs' own JSON."},
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.components.items())),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "OMG_TOKEN (inference), OMG_ADMIN_TOKEN (management) when set"}}},
    }


def openapi_route(routes: list[BaseRoute]) -> Route:
    """`GET /openapi.json`, built once on first request from the app's `routes`."""
    cached: list[bytes] = []

    async def serve(request: Request) -> Response:
        if not cached:
            cached.append(json.dumps(document(routes)).encode())
        return Response(cached[0], media_type="application/json")

    return Route(PATH, serve, methods=["GET"], name="openapi")


__all__ = ["PATH", "STATUS_SCHEMA", "Schemas", "document", "management_paths", "openapi_path", "openapi_route"]
