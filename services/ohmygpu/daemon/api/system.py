"""SystemService of the daemon API: version, status, health, devices, loaded models, unload,
shutdown."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from ohmygpu.api.v1 import system_pb2
from ohmygpu.core import access
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore, main_artifact
from ohmygpu.core.version import __version__
from ohmygpu.daemon.health_report import health_report
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.readiness import Readiness
from ohmygpu.runtime.v1 import runtime_pb2


class System:
    """Version, status, loaded models, shutdown."""

    def __init__(self, settings: Settings, store: ModelStore, orchestrator: Orchestrator,
                 request_shutdown: Callable[[], None], nodes: Any = None,
                 readiness: Readiness | None = None) -> None:
        self.readiness = readiness or Readiness()
        self.nodes = nodes  # the NodeRegistry (its join address and fingerprint), when serving
        self.settings = settings
        self.store = store
        self.orchestrator = orchestrator
        self.request_shutdown = request_shutdown
        self.started_at = time.time()

    async def ListDevices(self, request: system_pb2.ListDevicesRequest) -> system_pb2.ListDevicesResponse:
        import psutil

        inv = await asyncio.to_thread(self.orchestrator.inventory)
        return system_pb2.ListDevicesResponse(
            cpu_count=inv.cpu_count, ram_total=inv.ram_total, ram_available=inv.ram_available,
            cpu_percent=psutil.cpu_percent(interval=None),
            gpus=[system_pb2.Gpu(index=g.index, name=g.name, memory_total=g.total, memory_used=g.used,
                                 utilization=g.utilization, temperature=g.temperature) for g in inv.gpus])

    async def UnloadModel(self, request: system_pb2.UnloadModelRequest) -> system_pb2.UnloadModelResponse:
        if not request.name:
            raise InvalidArgument("name is required", param="name")
        # The one unload rule (pinned: refused; admin token set: needs it), as on every path.
        return system_pb2.UnloadModelResponse(unloaded=await self.orchestrator.unload(request.name))

    async def GetVersion(self, request: system_pb2.GetVersionRequest) -> system_pb2.GetVersionResponse:
        return system_pb2.GetVersionResponse(version=__version__)

    async def _loaded(self) -> list[system_pb2.LoadedModel]:
        out = []
        for worker, status in await self.orchestrator.loaded():
            try:
                record = await asyncio.to_thread(self.store.get, worker.model)
                size, digest = record.size_bytes, main_artifact(record).sha256
            except LookupError:
                size, digest = 0, ""
            out.append(system_pb2.LoadedModel(
                name=worker.model, runtime=worker.runtime.name, pid=worker.pid, device=worker.device,
                memory_bytes=status.memory_bytes if status else worker.memory_bytes,
                vram_bytes=status.vram_bytes if status else 0,
                state=status.state if status else runtime_pb2.WORKER_STATE_UNSPECIFIED,
                in_flight=worker.in_flight, context_length=worker.context_length,
                size_bytes=size, digest=digest, mode=worker.mode,
                queued=self.orchestrator.queued(worker.key), tokens_per_second=worker.tokens_per_second,
                node=self.orchestrator.node_name(worker.node),
            ))
            if worker.expires_at is not None:
                out[-1].expires_at.CopyFrom(timestamp(worker.expires_at))
        return out

    async def ListNodes(self, request: system_pb2.ListNodesRequest) -> system_pb2.ListNodesResponse:
        out = system_pb2.ListNodesResponse()
        if self.nodes is not None and self.nodes.address:
            out.join_address, out.join_fingerprint = self.nodes.address, self.nodes.fingerprint
        local_models = [r.name for r in await asyncio.to_thread(self.store.list)]
        for node in list(self.orchestrator.nodes):
            inv = await asyncio.to_thread(node.inventory)
            loaded = [w for w in self.orchestrator.workers.values() if w.node == node.index and w.alive]
            entry = out.nodes.add(
                name=node.name, state="up" if node.up else "down", address=node.address,
                cpu_count=inv.cpu_count, ram_total=inv.ram_total, ram_available=inv.ram_available,
                ram_budget=node.ram_budget, ram_used=sum(w.memory_bytes for w in loaded),
                loaded=sorted({str(w.key) for w in loaded}), labels=node.labels,
                gpus=[system_pb2.Gpu(index=g.index, name=g.name, memory_total=g.total, memory_used=g.used,
                                     utilization=g.utilization, temperature=g.temperature) for g in inv.gpus])
            if node.index == 0:
                entry.models.extend(local_models)
                entry.hub_access, entry.version = True, __version__
            else:
                entry.models.extend(sorted(r.name for r in node.models))  # type: ignore[attr-defined]
                entry.hub_access, entry.version = node.hub_access, node.version  # type: ignore[attr-defined]
                entry.last_heartbeat.CopyFrom(timestamp(node.last_heartbeat))  # type: ignore[attr-defined]
        return out

    async def GetStatus(self, request: system_pb2.GetStatusRequest) -> system_pb2.GetStatusResponse:
        return system_pb2.GetStatusResponse(
            version=__version__, http_addr=self.settings.http_addr, grpc_addr=self.settings.grpc_addr,
            # A local path: for callers who may manage the daemon only (see core/access.py).
            home=self.settings.home if access.caller_manages(self.settings.admin_token) else "",
            pid=os.getpid(), started_at=timestamp(self.started_at),
            loaded=await self._loaded(), model_count=len(await asyncio.to_thread(self.store.list)),
        )

    async def ListLoaded(self, request: system_pb2.ListLoadedRequest) -> system_pb2.ListLoadedResponse:
        return system_pb2.ListLoadedResponse(models=await self._loaded())

    async def GetHealth(self, request: system_pb2.GetHealthRequest) -> system_pb2.GetHealthResponse:
        return health_report(self.orchestrator, self.readiness, self.started_at)

    async def Shutdown(self, request: system_pb2.ShutdownRequest) -> system_pb2.ShutdownResponse:
        # Answer first; the daemon stops right after this call returns.
        asyncio.get_running_loop().call_later(0.1, self.request_shutdown)
        return system_pb2.ShutdownResponse()
