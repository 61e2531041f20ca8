"""Ollama's model making: /api/create, /api/blobs, /api/push, and the Modelfile view /api/show
gives of a model. Translation only: a create is ModelService.CreateModel (core/derived.py says
what a derived model is), a blob is the daemon API's receive_blob (core/blobs.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from ohmygpu.api.v1 import models_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import derived
from ohmygpu.core.artifacts import find_main_artifact, model_digest
from ohmygpu.core.digests import parse_digest
from ohmygpu.core.errors import InvalidArgument, Unimplemented
from ohmygpu.gateway import ollama_fields as fields
from ohmygpu.gateway.body import Fields, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.sampling import OLLAMA
from ohmygpu.gateway.streaming import ClosingStreamingResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# SamplingParams field -> Ollama's PARAMETER name (num_predict for max_tokens).
_OLLAMA_NAME = {n.field: n.json for n in OLLAMA.names}


def parameters_text(d: assets_pb2.DerivedModel) -> str:
    """A derived model's defaults as /api/show's `parameters`: one `name value` line each."""
    lines = []
    for field, value in d.params.ListFields():
        name = _OLLAMA_NAME.get(field.name, field.name)
        if field.name == "stop":
            lines += [f"{name:<30} {json.dumps(v)}" for v in value]
        else:
            lines.append(f"{name:<30} {value:g}" if isinstance(value, float) else f"{name:<30} {value}")
    if d.context_length:
        lines.append(f"{'num_ctx':<30} {d.context_length}")
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return f'"""{text}"""'


def modelfile(r: assets_pb2.InstallRecord) -> str:
    """The Modelfile /api/show gives: FROM the base (or the file a runtime is given), then what a
    derived model adds, in Ollama's instructions."""
    d = r.derived
    main = find_main_artifact(r)
    lines = [f"FROM {d.base or (main.filename if main is not None else r.name)}"]
    if d.template:
        lines.append(f"TEMPLATE {_quoted(d.template)}")
    if d.system:
        lines.append(f"SYSTEM {_quoted(d.system)}")
    lines += [f"PARAMETER {line}" for line in parameters_text(d).splitlines()]
    lines += [f"MESSAGE {m.role} {_quoted(m.content)}" for m in d.messages]
    lines += [f"LICENSE {_quoted(text)}" for text in d.license]
    return "\n".join(lines) + "\n"


def _files(f: Fields) -> dict[str, str]:
    files = f.obj("files") or {}
    for filename, digest in files.items():
        if not isinstance(digest, str):
            raise InvalidArgument(f"'files.{filename[:80]}' must be a digest (sha256:<64 hex>)", param="files")
        parse_digest(digest)
    return dict(files)


def _licenses(f: Fields) -> list[str]:
    value = f.data.get("license")
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise InvalidArgument("'license' must be a string or an array of strings", param="license")


def _messages(f: Fields) -> list[assets_pb2.DerivedMessage]:
    out = []
    for i, m in enumerate(f.list("messages") or []):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidArgument(f"'{where}' must be an object", param=where)
        mf = Fields(m, where + ".")
        fields.check(mf, "message")
        if m.get("tool_calls"):
            raise InvalidArgument(f"'{where}.tool_calls' cannot start a model's conversation", param=where + ".tool_calls")
        out.append(assets_pb2.DerivedMessage(role=mf.str("role", required=True), content=mf.str("content")))
    return out


def _line(status: str, **extra: object) -> str:
    return json.dumps({"status": status, **extra}) + "\n"


class OllamaModelRoutes:
    """Handlers for /api/create, /api/blobs/<digest> and /api/push."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/api/create", self.create, methods=["POST"]),
            Route("/api/blobs/{digest}", self.blob, methods=["HEAD", "POST"]),
            Route("/api/push", self.push, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        """A model from another's files (`from`) or an uploaded GGUF (`files`), with a system
        prompt, template, parameters, messages and license of its own. It is made before the
        answer starts, so a refusal is a plain 4xx; the stream then reports what was done."""
        f = Fields(await read_json(request, self.gw.body_limit))
        fields.check(f, "create")
        name = f.str("model") or f.str("name", required=True)
        stream = f.bool("stream", True)
        params, num_ctx = fields.sampling_options(f, "parameters", self.gw.settings.max_tokens_limit)
        asked = assets_pb2.DerivedModel(
            base=f.str("from"), system=f.str("system"), template=f.str("template"), context_length=num_ctx,
            params=derived.sampling_defaults(params), license=_licenses(f), messages=_messages(f))
        files = _files(f)
        record = await self.gw.api.models.CreateModel(
            models_pb2.CreateModelRequest(name=name, derived=asked, files=files))
        if not stream:
            return JSONResponse({"status": "success"})
        return ClosingStreamingResponse(self._progress(record, bool(files)), media_type="application/x-ndjson")

    @staticmethod
    async def _progress(record: assets_pb2.InstallRecord, uploaded: bool) -> AsyncIterator[str]:
        if uploaded:
            yield _line("parsing GGUF")
        yield _line(f"using existing layer {model_digest(record)}")
        yield _line("writing manifest")
        yield _line("success")

    async def blob(self, request: Request) -> Response:
        """HEAD: 200 when the blob was uploaded, 404 when not. POST: keep the body as the blob
        once it hashes to the digest named (400 and nothing kept when it does not): 201."""
        raw = request.path_params["digest"]
        digest = parse_digest("sha256:" + raw[len("sha256-"):] if raw.startswith("sha256-") else raw)
        if request.method == "HEAD":
            return Response(status_code=200 if await self.gw.api.blob_exists(digest) else 404)
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise InvalidArgument("invalid Content-Length")
        await self.gw.api.receive_blob(digest, request.stream(),
                                       declared=int(declared) if declared is not None else None)
        return Response(status_code=201)

    async def push(self, request: Request) -> Response:
        raise Unimplemented("pushing a model to a registry is not supported: models come from the Hugging Face "
                            "hub; to share one, upload its GGUF file there")


__all__ = ["OllamaModelRoutes", "modelfile", "parameters_text"]
