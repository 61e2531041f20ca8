"""Errors rendered in each HTTP dialect's own envelope, from OmgError's attributes."""

from __future__ import annotations

import json
import logging

import grpc
from ohmygpu.core.errors import OmgError
from starlette.responses import JSONResponse, Response

log = logging.getLogger("ohmygpu.gateway")

OLLAMA_PREFIX = "/api/"
# Management routes come from the protos' http rules; they answer like grpc-gateway.
MANAGEMENT_PREFIXES = ("/v1/store/", "/v1/store", "/v1/omg/", "/v1/version", "/v1/status",
                       "/v1/loaded", "/v1/devices", "/v1/shutdown", "/v1/models/install", "/v1/jobs", "/v1/events", "/v1/runs",
                       "/v1/train")
# Operations (gateway/operations.py, and /v1/health from its http rule) answer like management.
OPERATIONS_PATHS = ("/v1/health", "/metrics", "/livez", "/readyz")


A1111_PREFIX = "/sdapi/"
ANTHROPIC_PREFIX = "/v1/messages"  # and /v1/messages/count_tokens
# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors); any other
# status is invalid_request_error below 500 and api_error from 500 on.
_ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 414: "request_too_large", 431: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def dialect_for(path: str) -> str:
    if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
        return "anthropic"
    if path.startswith(OLLAMA_PREFIX):
        return "ollama"
    if path.startswith(A1111_PREFIX):
        return "a1111"
    if path.startswith(MANAGEMENT_PREFIXES) or path in OPERATIONS_PATHS:
        return "management"
    return "openai"


def error_body(e: OmgError, dialect: str) -> dict[str, object]:
    if dialect == "ollama":
        return {"error": e.message}
    if dialect == "a1111":  # Automatic1111's FastAPI errors
        return {"error": type(e).__name__, "detail": e.message}
    if dialect == "anthropic":
        status = e.http_status
        kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": e.message}}
    if dialect == "management":
        return {"code": grpc.StatusCode[e.grpc_code].value[0], "message": e.message, "details": []}
    return {"error": {"message": e.message, "type": e.openai_type,
                      "param": getattr(e, "param", None),
                      "code": getattr(e, "openai_code", None) or e.grpc_code.lower()}}


def error_response(e: OmgError, path: str) -> Response:
    headers = {"Retry-After": "1"} if e.http_status == 503 else None
    return JSONResponse(error_body(e, dialect_for(path)), status_code=e.http_status, headers=headers)


def stream_error_line(e: OmgError, dialect: str) -> str:
    """The error as one JSON text, for an error inside a stream that has already started."""
    return json.dumps(error_body(e, dialect))
