"""The standard gRPC services every server of ours also serves: server reflection (so grpcurl,
Postman or a reflection client can list and call the services without the protos) and
`grpc.health.v1.Health` (so grpc_health_probe, Kubernetes and load balancers can ask whether it
serves). The daemon's server and every worker's socket add them the same way.

Health answers SERVING for "" (the server as a whole) and for each named service from the moment
the server starts, and NOT_SERVING for all of them once `shutting_down` is called.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME


class StandardServices:
    """Reflection and health on one grpc.aio server."""

    def __init__(self, server: grpc.aio.Server, service_names: Iterable[str]) -> None:
        """`service_names`: full names ("ohmygpu.api.v1.ModelService") of the services `server`
        serves besides these two."""
        self.names = [*service_names]
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([*self.names, HEALTH_SERVICE, REFLECTION_SERVICE], server)

    async def serving(self) -> None:
        """Report SERVING for the server and each of its services."""
        for name in ("", *self.names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING from now on, for everything (health checks see the drain before the close)."""
        await self.health.enter_graceful_shutdown()


__all__ = ["HEALTH_SERVICE", "REFLECTION_SERVICE", "StandardServices"]
