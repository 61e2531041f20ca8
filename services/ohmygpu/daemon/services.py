"""The daemon's gRPC services: thin translators over the daemon API (daemon/api/). Each RPC
calls the API method of the same name with the request; an OmgError becomes the call's status
(daemon/grpc_errors.py). The HTTP management routes call the same API methods
(gateway/management.py), so each behaviour is written once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ohmygpu.api.v1 import (
    audio_pb2_grpc,
    chat_pb2_grpc,
    embeddings_pb2_grpc,
    events_pb2_grpc,
    images_pb2_grpc,
    jobs_pb2_grpc,
    models_pb2_grpc,
    runs_pb2_grpc,
    system_pb2_grpc,
    train_pb2_grpc,
)
from ohmygpu.daemon import grpc_errors
from ohmygpu.daemon.api import SERVICES, DaemonAPI

# proto service -> (generated servicer base, its add_..._to_server)
_GRPC: dict[str, tuple[type, Callable[[Any, grpc.aio.Server], None]]] = {
    "ModelService": (models_pb2_grpc.ModelServiceServicer, models_pb2_grpc.add_ModelServiceServicer_to_server),
    "ChatService": (chat_pb2_grpc.ChatServiceServicer, chat_pb2_grpc.add_ChatServiceServicer_to_server),
    "EmbeddingService": (embeddings_pb2_grpc.EmbeddingServiceServicer,
                         embeddings_pb2_grpc.add_EmbeddingServiceServicer_to_server),
    "AudioService": (audio_pb2_grpc.AudioServiceServicer, audio_pb2_grpc.add_AudioServiceServicer_to_server),
    "ImageService": (images_pb2_grpc.ImageServiceServicer, images_pb2_grpc.add_ImageServiceServicer_to_server),
    "JobService": (jobs_pb2_grpc.JobServiceServicer, jobs_pb2_grpc.add_JobServiceServicer_to_server),
    "EventService": (events_pb2_grpc.EventServiceServicer, events_pb2_grpc.add_EventServiceServicer_to_server),
    "RunService": (runs_pb2_grpc.RunServiceServicer, runs_pb2_grpc.add_RunServiceServicer_to_server),
    "SystemService": (system_pb2_grpc.SystemServiceServicer,
                      system_pb2_grpc.add_SystemServiceServicer_to_server),
    "TrainService": (train_pb2_grpc.TrainServiceServicer, train_pb2_grpc.add_TrainServiceServicer_to_server),
}


def _unary(name: str) -> Callable[..., Any]:
    @grpc_errors.unary
    async def method(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await getattr(self.impl, name)(request)

    method.__name__ = name
    return method


def _stream(name: str) -> Callable[..., AsyncIterator[Any]]:
    @grpc_errors.stream
    async def method(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for message in getattr(self.impl, name)(request):
            yield message

    method.__name__ = name
    return method


def servicer(service: str, impl: object) -> Any:
    """A gRPC servicer of proto service `service` whose RPCs are `impl`'s methods of the same
    names (an RPC `impl` lacks keeps the generated UNIMPLEMENTED answer)."""
    base, _ = _GRPC[service]
    namespace: dict[str, Any] = {"impl": impl}
    for method in SERVICES[service].methods:
        if hasattr(impl, method.name):
            namespace[method.name] = (_stream if method.server_streaming else _unary)(method.name)
    return type(base.__name__, (base,), namespace)()


def add_services(api: DaemonAPI, server: grpc.aio.Server) -> None:
    """Every public service of the daemon API on `server`."""
    for name, (_, add) in _GRPC.items():
        add(servicer(name, api.service(name)), server)
