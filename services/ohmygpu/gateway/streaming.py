"""Helpers shared by the dialects: start a stream so that errors before the first message
become a normal error response, finish-reason names, and streamed tool calls joined whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

from ohmygpu.runtime.v1 import runtime_pb2
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

M = TypeVar("M")

FINISH_NAMES = {
    runtime_pb2.FINISH_REASON_STOP: "stop",
    runtime_pb2.FINISH_REASON_LENGTH: "length",
    runtime_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    runtime_pb2.FINISH_REASON_CANCELLED: "stop",
    runtime_pb2.FINISH_REASON_UNSPECIFIED: "stop",
}


async def primed(stream: AsyncIterator[M]) -> AsyncIterator[M]:
    """Await the first message now (so a missing model or a load failure raises here, before
    any response header is sent) and return an iterator over the whole stream."""
    iterator = stream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[M]:
        try:
            if first is not None:
                yield first
                async for message in iterator:
                    yield message
        finally:
            await iterator.aclose()  # a client that went away cancels the generation

    return rest()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator when the response ends, however it ends.

    Starlette leaves the iterator as it was when the client goes away: when that happens while
    a chunk is being sent (the generator suspended at its `yield`), the generator, and the
    generation behind it (its worker call, its serving slot), is only closed when the garbage
    collector finalizes it, which may be minutes later; meanwhile the model keeps generating
    for nobody and queued requests wait. Closing it here stops it at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


class ToolCalls:
    """A turn's tool calls, joined from their streamed deltas (runtime.proto ToolCallDelta: the
    id and name on a call's first delta, its arguments' JSON text in pieces), in index order.
    Every dialect that shows whole calls (OpenAI's and Ollama's non-streamed answers, Ollama's
    streamed one) joins them here."""

    def __init__(self) -> None:
        self._calls: dict[int, runtime_pb2.ToolCallDelta] = {}

    def add(self, deltas: Iterable[runtime_pb2.ToolCallDelta]) -> None:
        for d in deltas:
            call = self._calls.get(d.index)
            if call is None:
                self._calls[d.index] = runtime_pb2.ToolCallDelta(index=d.index, id=d.id, name=d.name,
                                                                 arguments=d.arguments)
                continue
            call.arguments += d.arguments
            # A runtime may name the call on a later delta; the first id and name given win.
            call.id = call.id or d.id
            call.name = call.name or d.name

    def whole(self) -> list[runtime_pb2.ToolCallDelta]:
        """The joined calls, by index."""
        return [self._calls[i] for i in sorted(self._calls)]

    def __bool__(self) -> bool:
        return bool(self._calls)


class Answer:
    """A chat answer joined from its stream: text, reasoning, log probabilities, whole tool
    calls and the last message (finish reason, usage). What every non-streamed answer (and the
    Responses API's items) is built from."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.logprobs: list[runtime_pb2.TokenLogprob] = []
        self.calls = ToolCalls()
        self.final = runtime_pb2.ChatResponse()

    def add(self, m: runtime_pb2.ChatResponse) -> None:
        if m.content:
            self.content.append(m.content)
        if m.reasoning:
            self.reasoning.append(m.reasoning)
        self.logprobs.extend(m.logprobs)
        self.calls.add(m.tool_calls)
        if m.finish_reason:
            self.final = m

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def thought(self) -> str:
        return "".join(self.reasoning)
