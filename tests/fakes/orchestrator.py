"""An orchestrator stand-in for the translators' tests: the real gateway and daemon API in
front of it, no model and no worker behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ohmygpu.core.errors import OmgError
from ohmygpu.runtime.v1 import runtime_pb2

STOP = runtime_pb2.ChatResponse(finish_reason=runtime_pb2.FINISH_REASON_STOP)


class ScriptedOrchestrator:
    """Records each request; answers with `script` (default: "ok", then stop), or raises `error`."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.script: list[runtime_pb2.ChatResponse] = []
        self.error: OmgError | None = None

    async def chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        for message in self.script or [runtime_pb2.ChatResponse(content="ok"), STOP]:
            yield message

    async def complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        self.requests.append(request)
        yield runtime_pb2.CompleteResponse(text="ok")
        yield runtime_pb2.CompleteResponse(finish_reason=runtime_pb2.FINISH_REASON_STOP)

    async def count_tokens(self, request: runtime_pb2.CountTokensRequest) -> runtime_pb2.CountTokensResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return runtime_pb2.CountTokensResponse(prompt_tokens=7)

    async def worker_for(self, name: str, *, mode: int = 0, **_: Any) -> object:
        self.requests.append(("load", name, mode))
        return object()

    def set_keep_alive(self, worker: object, keep_alive: str) -> None:
        pass

    async def unload(self, name: str, **_: Any) -> bool:
        self.requests.append(("unload", name))
        return True
