"""Per-method bounds on the size of a gRPC request message.

grpc's own receive limit is one number per server, and it must let a whole audio file through
Transcribe (OMG_MAX_AUDIO_MB). Every other method takes what an HTTP body may hold
(OMG_MAX_BODY_MB): a bigger message is refused with RESOURCE_EXHAUSTED before it is parsed into
a Python object (two 250 MB ChatRequests had grown the daemon by 1.65 GB, and 600 MB stayed).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import grpc

# Full method names (as gRPC gives them) that carry a file and get the large limit.
UPLOAD_METHODS = frozenset({"/ohmygpu.api.v1.AudioService/Transcribe"})


class _TooLarge:
    """Stands for a request that was not parsed because it is over its method's limit."""

    def __init__(self, size: int) -> None:
        self.size = size


def _give_back_memory() -> None:
    """Return freed heap to the system: grpc read the refused message into many small buffers,
    which malloc would otherwise keep (measured: ~120 MiB kept after a dozen 40 MiB messages)."""
    if _libc is not None:
        _libc.malloc_trim(0)


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _libc = None  # not glibc: nothing to trim with


def _bounded(deserializer: Callable[[bytes], Any] | None, limit: int) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        if len(raw) > limit:
            return _TooLarge(len(raw))
        return deserializer(raw) if deserializer is not None else raw

    return parse


def _refusing(behavior: Callable[..., Any], limit: int, streaming: bool) -> Callable[..., Any]:
    async def refuse(request: _TooLarge, context: grpc.aio.ServicerContext) -> None:
        _give_back_memory()
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"the request message is {request.size} bytes, over this method's limit of "
                            f"{limit} bytes (OMG_MAX_BODY_MB)")

    if streaming:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _TooLarge):
                await refuse(request, context)
                return
            async for message in behavior(request, context):
                yield message

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _TooLarge):
            return await refuse(request, context)
        return await behavior(request, context)

    return unary


class MessageLimitInterceptor(grpc.aio.ServerInterceptor):
    """Bounds the request message of every method but UPLOAD_METHODS (which the server's own
    receive limit bounds) to `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # unknown method (grpc answers UNIMPLEMENTED), or none of ours
        if handler_call_details.method in UPLOAD_METHODS:
            return handler  # the server's own receive limit is this method's
        limit = self.limit
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _refusing(handler.unary_stream, limit, True),
                request_deserializer=_bounded(handler.request_deserializer, limit),
                response_serializer=handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            _refusing(handler.unary_unary, limit, False),
            request_deserializer=_bounded(handler.request_deserializer, limit),
            response_serializer=handler.response_serializer)

