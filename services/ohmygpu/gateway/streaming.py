"""Helpers shared by the dialects: start a stream so that errors before the first message
become a normal error response, and finish-reason names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from ohmygpu.runtime.v1 import runtime_pb2

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
