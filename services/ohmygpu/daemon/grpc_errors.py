"""OmgError -> gRPC status, once, for every daemon servicer method; and token checks."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ohmygpu.core import access
from ohmygpu.core.errors import OmgError


def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a unary servicer method: an OmgError aborts with its status code.

    The HTTP gateway does not come here: it calls the daemon API (daemon/api/) directly.
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


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the token their method needs (see core/access.py): UNAUTHENTICATED
    without one, PERMISSION_DENIED with an inference token on a management method."""

    def __init__(self, token: str, admin_token: str = "") -> None:
        self.token = token
        self.admin_token = admin_token

    @staticmethod
    def _deny(error: OmgError, streaming: bool) -> grpc.RpcMethodHandler:
        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode[error.grpc_code], error.message)

        if streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        metadata = dict(handler_call_details.invocation_metadata or ())
        method = handler_call_details.method.lstrip("/").replace("/", ".")
        if method in access.OPEN_METHODS:
            return await continuation(handler_call_details)
        error = access.check(metadata.get("authorization"), admin=method in access.ADMIN_METHODS,
                             token=self.token, admin_token=self.admin_token)
        handler = await continuation(handler_call_details)
        if error is None:
            return handler
        return self._deny(error, handler is not None and handler.response_streaming)
