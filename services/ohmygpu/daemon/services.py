"""The daemon's gRPC services: models, chat, system. The HTTP management API calls the same
methods (see gateway/management.py), so each behaviour is written once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from ohmygpu.api.v1 import (
    audio_pb2_grpc,
    chat_pb2_grpc,
    embeddings_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
)
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access, maintenance
from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge, ServerBusy
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore, main_artifact
from ohmygpu.core.version import __version__
from ohmygpu.daemon import grpc_errors
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.jobs import JobManager
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.runs import RunManager
from ohmygpu.runtime.v1 import runtime_pb2

T = TypeVar("T")


class Maintenance:
    """Heavy store work (verify hashes every byte, gc walks the cache) runs here: one task at a
    time on its own thread, and a bounded queue behind it. On the shared default executor, eight
    verifies took every thread the daemon's listings need (/api/tags went from 0.09 s to 9.3 s)."""

    def __init__(self, max_waiting: int = 4) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="maintenance")
        self._max_waiting = max_waiting
        self._waiting = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """fn() on the maintenance thread; raises ServerBusy when too many tasks already wait."""
        if self._waiting >= self._max_waiting:
            raise ServerBusy(f"store maintenance is busy ({self._waiting} tasks waiting); try again later")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self._waiting -= 1


def redacted(record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord:
    """`record` without local paths (its files' paths; of a local source's path only the file
    name stays), for callers who may not manage the daemon."""
    out = assets_pb2.InstallRecord()
    out.CopyFrom(record)
    for artifact in out.artifacts:
        artifact.ClearField("local_path")
    if out.ref.provider == assets_pb2.PROVIDER_LOCAL:
        out.ref.repo = Path(out.ref.repo).name
    return out


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    """Store management."""

    def __init__(self, store: ModelStore, orchestrator: Orchestrator, jobs: JobManager) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.jobs = jobs
        self.hf_cache = Path(jobs.settings.hf_hub_cache)
        self.maintenance = Maintenance()

    def _shown(self, record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord:
        """Local paths only for callers who may manage the daemon (see core/access.py)."""
        return record if access.caller_manages(self.jobs.settings.admin_token) else redacted(record)

    @grpc_errors.unary
    async def InstallModel(self, request: models_pb2.InstallModelRequest, context) -> jobs_pb2.Job:
        return await self.jobs.submit(request)

    @grpc_errors.unary
    async def SearchModels(self, request: models_pb2.SearchModelsRequest, context) -> models_pb2.SearchModelsResponse:
        query = request.query.strip()
        if not query or len(query) > 200:
            raise InvalidArgument("query must be 1 to 200 characters", param="query")
        if not 0 <= request.limit <= 100:
            raise InvalidArgument("limit must be between 0 and 100", param="limit")
        hits = await self.jobs.hub.search(query, request.limit or 20)
        return models_pb2.SearchModelsResponse(hits=[
            models_pb2.SearchHit(repo=h.repo_id, downloads=h.downloads, likes=h.likes,
                                 quantizations=h.quantizations, pipeline_tag=h.pipeline_tag) for h in hits])

    @grpc_errors.unary
    async def ListModels(self, request: models_pb2.ListModelsRequest, context) -> models_pb2.ListModelsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size must not be negative", param="page_size")
        records = await asyncio.to_thread(self.store.list)
        try:
            start = int(request.page_token or 0)
        except ValueError:
            raise InvalidArgument("invalid page_token", param="page_token") from None
        end = start + request.page_size if request.page_size else len(records)
        out = models_pb2.ListModelsResponse(models=[self._shown(r) for r in records[start:end]])
        if end < len(records):
            out.next_page_token = str(end)
        return out

    @grpc_errors.unary
    async def GetModel(self, request: models_pb2.GetModelRequest, context) -> assets_pb2.InstallRecord:
        return self._shown(await asyncio.to_thread(self.store.get, request.name))

    @grpc_errors.unary
    async def AddModel(self, request: models_pb2.AddModelRequest, context) -> assets_pb2.InstallRecord:
        return await asyncio.to_thread(self.store.add_local, Path(request.path),
                                       name=request.name or None)

    @grpc_errors.unary
    async def DeleteModel(self, request: models_pb2.DeleteModelRequest, context) -> models_pb2.DeleteModelResponse:
        await asyncio.to_thread(self.store.require, request.name)  # NotFound before stopping anything
        await self.orchestrator.unload(request.name, reason="deleted")  # refused while a run pins it
        freed = await asyncio.to_thread(maintenance.remove_model, self.store, request.name, self.hf_cache)
        return models_pb2.DeleteModelResponse(freed_bytes=freed)

    @grpc_errors.unary
    async def AliasModel(self, request: models_pb2.AliasModelRequest, context) -> assets_pb2.InstallRecord:
        if not request.source or not request.destination:
            raise InvalidArgument("source and destination are required",
                                  param="source" if not request.source else "destination")
        return self._shown(await asyncio.to_thread(self.store.alias, request.source, request.destination))

    @grpc_errors.unary
    async def VerifyModels(self, request: models_pb2.VerifyModelsRequest, context) -> models_pb2.VerifyModelsResponse:
        checks = await self.maintenance.run(lambda: maintenance.verify(self.store, request.name))
        return models_pb2.VerifyModelsResponse(checks=[
            models_pb2.ArtifactCheck(model=c.model, filename=c.filename, ok=c.ok, expected=c.expected,
                                     actual=c.actual, problem=c.problem) for c in checks])

    @grpc_errors.unary
    async def GarbageCollect(self, request: models_pb2.GarbageCollectRequest, context) -> models_pb2.GarbageCollectResponse:
        report = await self.maintenance.run(lambda: maintenance.collect_garbage(
            self.store, self.hf_cache, dry_run=request.dry_run))
        return models_pb2.GarbageCollectResponse(removed=report.removed, freed_bytes=report.freed)

    @grpc_errors.unary
    async def DiskUsage(self, request: models_pb2.DiskUsageRequest, context) -> models_pb2.DiskUsageResponse:
        rows, total = await asyncio.to_thread(maintenance.disk_usage, self.store)
        return models_pb2.DiskUsageResponse(total_bytes=total, models=[
            models_pb2.ModelUsage(name=n, size_bytes=s, unique_bytes=u) for n, s, u in rows])


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """Pull jobs: state, progress, cancel, watch."""

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    @grpc_errors.unary
    async def GetJob(self, request: jobs_pb2.GetJobRequest, context) -> jobs_pb2.Job:
        return await self.jobs.get(request.id)

    @grpc_errors.unary
    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context) -> jobs_pb2.ListJobsResponse:
        return jobs_pb2.ListJobsResponse(jobs=await self.jobs.list())

    @grpc_errors.unary
    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context) -> jobs_pb2.Job:
        return await self.jobs.cancel(request.id)

    @grpc_errors.stream
    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context) -> AsyncIterator[jobs_pb2.Job]:
        async for job in self.jobs.watch(request.id):
            yield job


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    """Runs: pinned models with their load options."""

    def __init__(self, runs: RunManager) -> None:
        self.runs = runs

    @grpc_errors.unary
    async def CreateRun(self, request: runs_pb2.CreateRunRequest, context) -> runs_pb2.Run:
        return await self.runs.create(request.spec)

    @grpc_errors.unary
    async def ListRuns(self, request: runs_pb2.ListRunsRequest, context) -> runs_pb2.ListRunsResponse:
        return runs_pb2.ListRunsResponse(runs=await self.runs.list())

    @grpc_errors.unary
    async def GetRun(self, request: runs_pb2.GetRunRequest, context) -> runs_pb2.Run:
        return await self.runs.get(request.id)

    @grpc_errors.unary
    async def StopRun(self, request: runs_pb2.StopRunRequest, context) -> runs_pb2.Run:
        return await self.runs.stop(request.id)

    @grpc_errors.stream
    async def StreamRunLogs(self, request: runs_pb2.StreamRunLogsRequest, context) -> AsyncIterator:
        async for line in self.runs.logs(request.id, follow=request.follow):
            yield runs_pb2.RunLogLine(line=line)


class EventServicer(events_pb2_grpc.EventServiceServicer):
    """The event stream."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    @grpc_errors.stream
    async def StreamEvents(self, request: events_pb2.StreamEventsRequest, context) -> AsyncIterator:
        async for event in self.bus.subscribe(after_id=request.after_id, kinds=set(request.kinds)):
            yield event


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Inference by model name, streamed straight from the worker."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    @grpc_errors.stream
    async def Chat(self, request: runtime_pb2.ChatRequest, context) -> AsyncIterator[runtime_pb2.ChatResponse]:
        async for message in self.orchestrator.chat(request):
            yield message

    @grpc_errors.stream
    async def Complete(self, request: runtime_pb2.CompleteRequest, context) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        async for message in self.orchestrator.complete(request):
            yield message


class EmbeddingServicer(embeddings_pb2_grpc.EmbeddingServiceServicer):
    """Embeddings by model name."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    @grpc_errors.unary
    async def Embed(self, request: runtime_pb2.EmbedRequest, context) -> runtime_pb2.EmbedResponse:
        return await self.orchestrator.embed(request)


class AudioServicer(audio_pb2_grpc.AudioServiceServicer):
    """Speech to text by model name; the audio comes as bytes and is held in a private file
    while the worker reads it."""

    def __init__(self, orchestrator: Orchestrator, limit: int) -> None:
        self.orchestrator = orchestrator
        self.limit = limit

    @grpc_errors.stream
    async def Transcribe(self, request: runtime_pb2.TranscribeRequest, context,
                         ) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        if request.audio_path:
            # A client-chosen path would let a remote caller make the daemon read any file.
            raise InvalidArgument("audio_path is for the daemon's own use; send the file's bytes in 'audio'",
                                  param="audio_path")
        if not request.audio:
            raise InvalidArgument("the audio file is empty", param="audio")
        if len(request.audio) > self.limit:
            raise PayloadTooLarge(f"audio of {len(request.audio)} bytes is over the {self.limit} byte limit "
                                  "(OMG_MAX_AUDIO_MB)")
        with self.orchestrator.uploads.holding(request.audio) as path:
            request.ClearField("audio")
            async for message in self.orchestrator.transcribe(request, path):
                yield message


class SystemServicer(system_pb2_grpc.SystemServiceServicer):
    """Version, status, loaded models, shutdown."""

    def __init__(self, settings: Settings, store: ModelStore, orchestrator: Orchestrator,
                 request_shutdown: Callable[[], None]) -> None:
        self.settings = settings
        self.store = store
        self.orchestrator = orchestrator
        self.request_shutdown = request_shutdown
        self.started_at = time.time()

    @grpc_errors.unary
    async def ListDevices(self, request, context) -> system_pb2.ListDevicesResponse:
        import psutil

        inv = await asyncio.to_thread(self.orchestrator.inventory)
        return system_pb2.ListDevicesResponse(
            cpu_count=inv.cpu_count, ram_total=inv.ram_total, ram_available=inv.ram_available,
            cpu_percent=psutil.cpu_percent(interval=None),
            gpus=[system_pb2.Gpu(index=g.index, name=g.name, memory_total=g.total, memory_used=g.used,
                                 utilization=g.utilization, temperature=g.temperature) for g in inv.gpus])

    @grpc_errors.unary
    async def UnloadModel(self, request: system_pb2.UnloadModelRequest, context) -> system_pb2.UnloadModelResponse:
        if not request.name:
            raise InvalidArgument("name is required", param="name")
        # The one unload rule (pinned: refused; admin token set: needs it), as on every path.
        return system_pb2.UnloadModelResponse(unloaded=await self.orchestrator.unload(request.name))

    @grpc_errors.unary
    async def GetVersion(self, request, context) -> system_pb2.GetVersionResponse:
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
            ))
            if worker.expires_at is not None:
                out[-1].expires_at.CopyFrom(timestamp(worker.expires_at))
        return out

    @grpc_errors.unary
    async def GetStatus(self, request, context) -> system_pb2.GetStatusResponse:
        return system_pb2.GetStatusResponse(
            version=__version__, http_addr=self.settings.http_addr, grpc_addr=self.settings.grpc_addr,
            # A local path: for callers who may manage the daemon only (see core/access.py).
            home=self.settings.home if access.caller_manages(self.settings.admin_token) else "",
            pid=os.getpid(), started_at=timestamp(self.started_at),
            loaded=await self._loaded(), model_count=len(await asyncio.to_thread(self.store.list)),
        )

    @grpc_errors.unary
    async def ListLoaded(self, request, context) -> system_pb2.ListLoadedResponse:
        return system_pb2.ListLoadedResponse(models=await self._loaded())

    @grpc_errors.unary
    async def Shutdown(self, request, context) -> system_pb2.ShutdownResponse:
        # Answer first; the daemon stops right after this call returns.
        asyncio.get_running_loop().call_later(0.1, self.request_shutdown)
        return system_pb2.ShutdownResponse()
