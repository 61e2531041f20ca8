"""Embeddings over HTTP: OpenAI's /v1/embeddings and Ollama's /api/embed and /api/embeddings,
translated to one EmbedRequest (a batch) and back."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.gateway.body import Fields, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.ollama import keep_alive, load_or_unload, ollama_name
from ohmygpu.gateway.ollama_fields import embed_options
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MAX_INPUTS = 2048  # OpenAI's own limit per request


def text_inputs(value: Any, param: str) -> list[str]:
    """A string or an array of strings -> the batch; token arrays are refused with a way out."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_INPUTS:
            raise InvalidArgument(f"'{param}' holds {len(value)} inputs; at most {MAX_INPUTS}", param=param)
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
        # Token ids from another model's tokenizer (tiktoken) mean nothing to this model.
        raise InvalidArgument(f"'{param}' holds token ids; send text instead (LangChain: "
                              "OpenAIEmbeddings(check_embedding_ctx_length=False))", param=param)
    raise InvalidArgument(f"'{param}' must be a string or an array of strings", param=param)


def _float32_base64(values: Any) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


class EmbeddingRoutes:
    """Handlers for the embeddings endpoints of both dialects."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/embeddings", self.openai, methods=["POST"]),
            Route("/api/embed", self.ollama_embed, methods=["POST"]),
            Route("/api/embeddings", self.ollama_embeddings, methods=["POST"]),
        ]

    async def openai(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        model = f.str("model", required=True)
        if "input" not in f.data:
            raise InvalidArgument("'input' is required", param="input")
        inputs = text_inputs(f.data["input"], "input")
        encoding = f.str("encoding_format", default="float")
        if encoding not in ("float", "base64"):
            raise InvalidArgument("'encoding_format' must be float or base64", param="encoding_format")
        dims = f.int("dimensions", 1, 1 << 16) or 0
        f.str("user")  # accepted and ignored, as a type-checked field
        resp = await self.gw.api.embed(runtime_pb2.EmbedRequest(
            model=model, inputs=inputs, normalize=True, dimensions=dims))
        data = [{"object": "embedding", "index": i,
                 "embedding": _float32_base64(e.values) if encoding == "base64" else list(e.values)}
                for i, e in enumerate(resp.embeddings)]
        tokens = resp.usage.prompt_tokens
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def ollama_embed(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        f = Fields(await read_json(request, self.gw.body_limit))
        model = await ollama_name(self.gw, f.str("model", required=True))
        embed_options(f)
        raw = f.data.get("input")
        inputs = [] if raw is None or raw == [] else text_inputs(raw, "input")
        req = runtime_pb2.EmbedRequest(model=model, inputs=inputs, normalize=True,
                                       dimensions=f.int("dimensions", 1, 1 << 16) or 0,
                                       keep_alive=keep_alive(f.data.get("keep_alive")))
        req.truncate = f.bool("truncate", True)
        if not inputs:  # ollama: no input just loads the model
            await load_or_unload(self.gw, model, req.keep_alive, run_spec_pb2.MODE_EMBEDDINGS)
            return JSONResponse({"model": model, "embeddings": []})
        resp = await self.gw.api.embed(req)
        return JSONResponse({
            "model": model, "embeddings": [list(e.values) for e in resp.embeddings],
            "total_duration": time.perf_counter_ns() - started, "load_duration": resp.timings.load_ns,
            "prompt_eval_count": resp.usage.prompt_tokens,
        })

    async def ollama_embeddings(self, request: Request) -> Response:
        # The older endpoint: one prompt, a vector that is not normalised (as ollama's is not).
        f = Fields(await read_json(request, self.gw.body_limit))
        model = await ollama_name(self.gw, f.str("model", required=True))
        embed_options(f)
        prompt = f.str("prompt")
        ka = keep_alive(f.data.get("keep_alive"))
        if not prompt:  # as /api/embed with no input
            await load_or_unload(self.gw, model, ka, run_spec_pb2.MODE_EMBEDDINGS)
            return JSONResponse({"embedding": []})
        resp = await self.gw.api.embed(runtime_pb2.EmbedRequest(
            model=model, inputs=[prompt], normalize=False, keep_alive=ka))
        return JSONResponse({"embedding": list(resp.embeddings[0].values)})

