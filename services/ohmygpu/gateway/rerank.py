"""Reranking over HTTP: the Jina/Cohere request shape that LocalAI and Xinference serve, at
/v1/rerank (Jina's, Cohere v1's) and /v2/rerank (Cohere v2's), translated to one RerankRequest.

Request: model, query, documents (strings, or objects with a `text`), top_n, return_documents.
Response: results [{index, relevance_score, document: {text}?}] most relevant first, usage
(prompt and total tokens, Jina's), and Cohere's `id` and `meta.billed_units`. Errors are the
OpenAI-style envelope of the other /v1 routes (gateway/errors.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.gateway.body import Fields, FieldTable, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.ollama import keep_alive
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIELDS = FieldTable(
    what="rerank",
    honoured=frozenset({"model", "query", "documents", "top_n", "return_documents", "keep_alive"}),
    refused={
        "rank_fields": "documents are ranked by their text; send each as a string or {\"text\": ...}",
        "max_chunks_per_doc": "documents are not chunked; each is cut to the model's window",
        "max_tokens_per_doc": "documents are cut to the model's window, not to a number of tokens",
    },
)


def documents(value: Any) -> list[str]:
    """The documents' texts: each a string or an object with a string `text` (how many the
    daemon takes is its own check: daemon/admission.check_rerank)."""
    if not isinstance(value, list) or not value:
        raise InvalidArgument("'documents' must be a non-empty array of strings or {\"text\": ...} objects",
                              param="documents")
    out: list[str] = []
    for i, doc in enumerate(value):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str) or not text:
            raise InvalidArgument(f"'documents[{i}]' must be a non-empty string or an object with a non-empty "
                                  "string 'text'", param=f"documents[{i}]")
        out.append(text)
    return out


class RerankRoutes:
    """Handlers for /v1/rerank and /v2/rerank."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [Route("/v1/rerank", self.v1, methods=["POST"]), Route("/v2/rerank", self.v2, methods=["POST"])]

    async def v1(self, request: Request) -> Response:
        return await self._rerank(request, documents_by_default=True)  # Jina returns them by default

    async def v2(self, request: Request) -> Response:
        return await self._rerank(request, documents_by_default=False)  # Cohere v2 does not

    async def _rerank(self, request: Request, *, documents_by_default: bool) -> Response:
        data = await read_json(request, self.gw.body_limit)
        FIELDS.check(data)
        f = Fields(data)
        model = f.str("model", required=True)
        query = f.str("query", required=True)
        if not query:
            raise InvalidArgument("'query' must not be empty", param="query")
        texts = documents(data.get("documents"))
        top_n = f.int("top_n", 1, 1 << 20) or 0
        with_documents = f.bool("return_documents", documents_by_default)
        resp = await self.gw.api.rerank(runtime_pb2.RerankRequest(
            model=model, query=query, documents=texts, top_n=top_n,
            keep_alive=keep_alive(data.get("keep_alive"))))
        results = []
        for r in resp.results:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
            if with_documents:
                item["document"] = {"text": texts[r.index]}
            results.append(item)
        tokens = resp.usage.prompt_tokens
        return JSONResponse({
            "id": str(uuid.uuid4()), "model": model, "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "meta": {"billed_units": {"search_units": 1}},
        })
