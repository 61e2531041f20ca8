"""OmgError -> gRPC status, once, for every daemon servicer method; and token checks."""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ohmygpu.core.errors import OmgError


def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a unary servicer method: an OmgError aborts with its status code.

    The gateway calls the wrapped function (`__wrapped__`) directly, with context None.
    """

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except OmgError as e:
            await context.abort(grpc.StatusCode[e.grpc_code], e.message)

    return wrapper


def stream(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap a server-streaming servicer method like `unary`."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for message in fn(self, request, context):
                yield message
        except OmgError as e:
            await context.abort(grpc.StatusCode[e.grpc_code], e.message)

    return wrapper


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` value (LocalAI CVE-2024-7010)."""
    if not expected:
        return True
    given = (header or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), expected.encode())


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the daemon's token with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self.token = token

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (OMG_TOKEN)")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        metadata = dict(handler_call_details.invocation_metadata or ())
        if token_matches(self.token, metadata.get("authorization")):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is not None and handler.response_streaming:
            return self._deny_stream
        return self._deny_unary
