"""The OpenAPI operations of the routes that are not generated from the protos: the OpenAI,
Ollama, Anthropic and A1111 dialects and the operations routes. Their paths and methods come
from the routes the app serves; this table adds what a route cannot say about itself: a summary
and, where cheap, the schema of the body it takes. The dialects' own references (OpenAI's and
Ollama's API docs) define the fields in full; these schemas name the required ones and leave
the rest open (`additionalProperties`), since each dialect refuses what it cannot honour itself
(gateway/*_fields.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Route

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_MESSAGES = {"type": "array", "items": {"type": "object", "properties": {
    "role": {"type": "string"}, "content": {}}, "required": ["role"]}}
_MODEL = {"type": "string", "description": "a model name in the store (`omg model list`)"}


def _body(required: list[str], **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": True, "properties": props}
    if required:  # OpenAPI 3.0 wants a non-empty list or none
        schema["required"] = required
    return schema


_OPENAI_CHAT = _body(["model", "messages"], model=_MODEL, messages=_MESSAGES, stream={"type": "boolean"},
                     max_tokens={"type": "integer"}, temperature={"type": "number"})
_OLLAMA_CHAT = _body(["model"], model=_MODEL, messages=_MESSAGES, stream={"type": "boolean"},
                     options={"type": "object"})
_OPENAI_MODEL = {"type": "object", "required": ["id", "object"], "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
    "created": {"type": "integer"}, "owned_by": {"type": "string"}}}
_JSON = "application/json"
_MULTIPART = "multipart/form-data"

# (method, path) -> (summary, request body schema or None, its media type, 200 answer's schema or None)
OPERATIONS: dict[tuple[str, str], tuple[str, dict[str, Any] | None, str, dict[str, Any] | None]] = {
    ("GET", "/"): ("What this server is (a line of text, as ollama answers)", None, _JSON, None),
    # OpenAI
    ("POST", "/v1/chat/completions"): ("OpenAI: create a chat completion (stream: server-sent events)",
                                       _OPENAI_CHAT, _JSON, None),
    ("POST", "/v1/completions"): ("OpenAI: create a text completion",
                                  _body(["model", "prompt"], model=_MODEL, prompt={}), _JSON, None),
    ("GET", "/v1/models"): ("OpenAI: list the models", None, _JSON, {
        "type": "object", "required": ["object", "data"], "properties": {
            "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _OPENAI_MODEL}}}),
    ("GET", "/v1/models/{model}"): ("OpenAI: one model", None, _JSON, _OPENAI_MODEL),
    ("POST", "/v1/embeddings"): ("OpenAI: create embeddings", _body(["model", "input"], model=_MODEL, input={}),
                                 _JSON, None),
    ("POST", "/v1/audio/transcriptions"): ("OpenAI: transcribe audio", _body(["file", "model"]), _MULTIPART, None),
    ("POST", "/v1/audio/translations"): ("OpenAI: translate audio into English", _body(["file", "model"]),
                                         _MULTIPART, None),
    ("POST", "/v1/images/generations"): ("OpenAI: generate images", _body(["prompt"], prompt={"type": "string"}),
                                         _JSON, None),
    ("POST", "/v1/images/edits"): ("OpenAI: edit an image", _body(["image", "prompt"]), _MULTIPART, None),
    ("POST", "/v1/responses"): ("OpenAI: create a response (Responses API)", _body(["model"], model=_MODEL),
                                _JSON, None),
    ("GET", "/v1/responses/{response_id}"): ("OpenAI: a stored response", None, _JSON, None),
    ("DELETE", "/v1/responses/{response_id}"): ("OpenAI: delete a stored response", None, _JSON, None),
    ("GET", "/v1/responses/{response_id}/input_items"): ("OpenAI: a stored response's input items",
                                                         None, _JSON, None),
    # Ollama
    ("POST", "/api/chat"): ("Ollama: chat (stream: newline-delimited JSON)", _OLLAMA_CHAT, _JSON, None),
    ("POST", "/api/generate"): ("Ollama: generate a completion", _body(["model"], model=_MODEL,
                                                                        prompt={"type": "string"}), _JSON, None),
    ("GET", "/api/tags"): ("Ollama: list local models", None, _JSON, {
        "type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}),
    ("POST", "/api/show"): ("Ollama: show a model's details and Modelfile", _body(["model"], model=_MODEL),
                            _JSON, None),
    ("GET", "/api/version"): ("Ollama: the server version", None, _JSON, {
        "type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}),
    ("GET", "/api/ps"): ("Ollama: the models loaded now", None, _JSON, None),
    ("POST", "/api/pull"): ("Ollama: pull a model (from the Hugging Face hub)", _body(["model"], model=_MODEL),
                            _JSON, None),
    ("DELETE", "/api/delete"): ("Ollama: delete a model", _body(["model"], model=_MODEL), _JSON, None),
    ("POST", "/api/copy"): ("Ollama: copy a model under another name",
                            _body(["source", "destination"], source=_MODEL, destination={"type": "string"}),
                            _JSON, None),
    ("POST", "/api/create"): ("Ollama: create a model from another or from uploaded blobs",
                              _body(["model"], model={"type": "string"}), _JSON, None),
    ("POST", "/api/blobs/{digest}"): ("Ollama: upload a blob to create a model from", None,
                                      "application/octet-stream", None),
    ("HEAD", "/api/blobs/{digest}"): ("Ollama: whether a blob was uploaded", None, _JSON, None),
    ("POST", "/api/push"): ("Ollama: push a model (refused: there is no registry to push to)", None, _JSON, None),
    ("POST", "/api/embed"): ("Ollama: embed text", _body(["model"], model=_MODEL, input={}), _JSON, None),
    ("POST", "/api/embeddings"): ("Ollama: embed text (the older endpoint)", _body(["model"], model=_MODEL,
                                                                                  prompt={"type": "string"}),
                                  _JSON, None),
    # Anthropic
    ("POST", "/v1/messages"): ("Anthropic: create a message (Messages API)",
                               _body(["model", "messages", "max_tokens"], model=_MODEL, messages=_MESSAGES,
                                     max_tokens={"type": "integer"}), _JSON, None),
    ("POST", "/v1/messages/count_tokens"): ("Anthropic: count a message's input tokens",
                                            _body(["model", "messages"], model=_MODEL, messages=_MESSAGES),
                                            _JSON, None),
    # Automatic1111
    ("POST", "/sdapi/v1/txt2img"): ("A1111: text to image", _body([], prompt={"type": "string"}), _JSON, None),
    ("POST", "/sdapi/v1/img2img"): ("A1111: image to image", _body(["init_images"]), _JSON, None),
    ("GET", "/sdapi/v1/sd-models"): ("A1111: the image models", None, _JSON, None),
    ("GET", "/sdapi/v1/options"): ("A1111: the options", None, _JSON, None),
    ("POST", "/sdapi/v1/options"): ("A1111: set the options (the checkpoint to use)", _body([]), _JSON, None),
    ("GET", "/sdapi/v1/samplers"): ("A1111: the samplers", None, _JSON, None),
    ("GET", "/sdapi/v1/progress"): ("A1111: progress of the generation under way", None, _JSON, None),
    # Operations
    ("GET", "/livez"): ("Liveness probe (no token needed)", None, _JSON, None),
    ("HEAD", "/livez"): ("Liveness probe (no token needed)", None, _JSON, None),
    ("GET", "/readyz"): ("Readiness probe: 503 until started (no token needed)", None, _JSON, None),
    ("HEAD", "/readyz"): ("Readiness probe (no token needed)", None, _JSON, None),
    ("GET", "/metrics"): ("Prometheus metrics (management)", None, "text/plain", None),
    ("GET", "/openapi.json"): ("This document", None, _JSON, None),
}


def openapi_path(path: str) -> str:
    """Starlette's "/v1/models/{model:path}" -> "/v1/models/{model}"."""
    return _PARAM.sub(lambda m: "{%s}" % m.group(1), path)


def _operation(verb: str, path: str) -> dict[str, Any]:
    summary, body, media, answer = OPERATIONS.get((verb, path), (f"{verb} {path}", None, _JSON, None))
    op: dict[str, Any] = {"summary": summary, "tags": [_tag(path)]}
    params = _PARAM.findall(path)
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                            for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
    ok: dict[str, Any] = {"description": "OK"}
    if answer is not None:
        ok["content"] = {_JSON: {"schema": answer}}
    op["responses"] = {"200": ok, "default": {"description": "An error in the dialect's own envelope"}}
    return op


def _tag(path: str) -> str:
    if path.startswith("/api/"):
        return "Ollama"
    if path.startswith("/sdapi/"):
        return "A1111"
    if path.startswith("/v1/messages"):
        return "Anthropic"
    if path.startswith("/v1/"):
        return "OpenAI"
    return "Operations"


def dialect_paths(routes: Iterable[BaseRoute], *, skip: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Operations for the HTTP routes in `routes` (plain routes, not WebSockets) whose path and
    method are not already in `skip` (the management paths)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = openapi_path(route.path)
        methods = set(route.methods or ())
        if "GET" in methods and ("HEAD", path) not in OPERATIONS:
            methods.discard("HEAD")  # starlette answers HEAD for every GET
        for verb in sorted(methods):
            if verb.lower() in skip.get(path, {}):
                continue
            paths.setdefault(path, {})[verb.lower()] = _operation(verb, path)
    return paths


__all__ = ["OPERATIONS", "dialect_paths", "openapi_path"]
