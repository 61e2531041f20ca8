"""The agent's relay of the Runtime service: a daemon call naming a worker (metadata
`omg-worker`) is passed to that worker's Unix socket and its answers back, as raw bytes,
message by message (no parsing, no buffering), with the caller's deadline and cancellation.
Every runtime therefore works on a node unchanged, including ones added later."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.runtime.v1 import runtime_pb2

_SERVICE = runtime_pb2.DESCRIPTOR.services_by_name["Runtime"]


class RuntimeRelay(grpc.GenericRpcHandler):
    """Handlers for every Runtime method, relaying to the worker the call names."""

    def __init__(self, workers: Callable[[str], Worker | None]) -> None:
        self._workers = workers
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in _SERVICE.methods:
            path = f"/{_SERVICE.full_name}/{method.name}"
            if method.client_streaming:
                continue  # the Runtime service has none; one added later is refused, not mis-relayed
            if method.server_streaming:
                self._handlers[path] = grpc.unary_stream_rpc_method_handler(self._streaming(path))
            else:
                self._handlers[path] = grpc.unary_unary_rpc_method_handler(self._unary(path))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    async def _channel(self, context: grpc.aio.ServicerContext) -> grpc.aio.Channel:
        worker_id = dict(context.invocation_metadata() or ()).get("omg-worker", "")
        worker = self._workers(worker_id)
        if worker is None or worker.channel is None or not worker.alive:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no worker {worker_id or '(none named)'} runs on this node")
        assert worker is not None and worker.channel is not None
        return worker.channel

    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext) -> float | None:
        left = context.time_remaining()
        return left if left is not None and left < 1e8 else None

    @staticmethod
    async def _fail(context: grpc.aio.ServicerContext, e: grpc.aio.AioRpcError) -> None:
        # The worker's own status, details and trailing metadata (omg-error: context_length_exceeded).
        trailing = e.trailing_metadata()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        await context.abort(e.code(), e.details() or "")

    def _unary(self, path: str) -> Callable[..., Any]:
        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            channel = await self._channel(context)
            call = channel.unary_unary(path)(request, timeout=self._timeout(context))
            try:
                return await call
            except grpc.aio.AioRpcError as e:
                await self._fail(context, e)
                raise
            finally:
                call.cancel()
        return relay

    def _streaming(self, path: str) -> Callable[..., AsyncIterator[bytes]]:
        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            channel = await self._channel(context)
            call = channel.unary_stream(path)(request, timeout=self._timeout(context))
            try:
                async for message in call:
                    yield message
            except grpc.aio.AioRpcError as e:
                await self._fail(context, e)
            except asyncio.CancelledError:
                raise  # the daemon went away or cancelled: `finally` cancels the worker's call
            finally:
                call.cancel()
        return relay
