"""The store half of the daemon API: models (list, get, add, alias, delete, verify, gc, disk
usage, search) and the pull jobs that install them. Methods carry their RPC's name and take
and return its messages, so the gRPC servicers and the HTTP management routes are translators."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from ohmygpu.api.v1 import jobs_pb2, models_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access, blobs, derived, maintenance
from ohmygpu.core.errors import FailedPrecondition, InvalidArgument, ServerBusy
from ohmygpu.core.estimate import context_window, estimate
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.jobs import JobManager
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.pool import check_mode

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


class Models:
    """ModelService: store management."""

    def __init__(self, settings: Settings, store: ModelStore, orchestrator: Orchestrator,
                 jobs: JobManager) -> None:
        self.settings = settings
        self.store = store
        self.orchestrator = orchestrator
        self.jobs = jobs
        self.hf_cache = Path(settings.hf_hub_cache)
        self.maintenance = Maintenance()

    def _shown(self, record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord:
        """Local paths only for callers who may manage the daemon (see core/access.py)."""
        return record if access.caller_manages(self.settings.admin_token) else redacted(record)

    async def InstallModel(self, request: models_pb2.InstallModelRequest) -> jobs_pb2.Job:
        return await self.jobs.submit(request)

    async def SearchModels(self, request: models_pb2.SearchModelsRequest) -> models_pb2.SearchModelsResponse:
        query = request.query.strip()
        if not query or len(query) > 200:
            raise InvalidArgument("query must be 1 to 200 characters", param="query")
        if not 0 <= request.limit <= 100:
            raise InvalidArgument("limit must be between 0 and 100", param="limit")
        hits = await self.jobs.hub.search(query, request.limit or 20)
        return models_pb2.SearchModelsResponse(hits=[
            models_pb2.SearchHit(repo=h.repo_id, downloads=h.downloads, likes=h.likes,
                                 quantizations=h.quantizations, pipeline_tag=h.pipeline_tag) for h in hits])

    async def ListModels(self, request: models_pb2.ListModelsRequest) -> models_pb2.ListModelsResponse:
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

    async def GetModel(self, request: models_pb2.GetModelRequest) -> assets_pb2.InstallRecord:
        return self._shown(await asyncio.to_thread(self.store.get, request.name))

    async def EstimateModel(self, request: models_pb2.EstimateModelRequest) -> models_pb2.EstimateModelResponse:
        """The model's memory as this daemon would load it: its context and slots (a pinning
        run's, else OMG_CONTEXT_LENGTH and OMG_NUM_PARALLEL), in the model's own mode. The
        client's settings play no part: they are not the daemon's."""
        record = await asyncio.to_thread(self.store.get, request.name)
        res = run.resources if (run := self.orchestrator.pinned_run(record.name)) is not None else None
        context = ((res.context_length if res is not None else 0) or record.derived.context_length
                   or self.settings.context_length)
        parallel = (res.max_concurrency if res is not None else 0) or max(1, self.settings.num_parallel)
        est = estimate(record, context_length=context, parallel=parallel, mode=check_mode(record, 0))
        return models_pb2.EstimateModelResponse(
            weights_bytes=est.weights, kv_cache_bytes=est.kv_cache, overhead_bytes=est.overhead,
            total_bytes=est.total,
            context_length=context_window(record, context) if record.HasField("gguf") or (
                record.HasField("transformers") and record.kind == assets_pb2.MODEL_KIND_LLM) else 0)

    async def AddModel(self, request: models_pb2.AddModelRequest) -> assets_pb2.InstallRecord:
        return await asyncio.to_thread(self.store.add_local, Path(request.path),
                                       name=request.name or None, parts=[Path(p) for p in request.parts])

    async def CreateModel(self, request: models_pb2.CreateModelRequest) -> assets_pb2.InstallRecord:
        """A model made from another's files or an uploaded GGUF, with settings of its own
        (core/derived.py). Raises InvalidArgument (naming Ollama's field), ModelNotFound (the
        base), NotFound (a blob not uploaded), AlreadyExists (the name holds a model not made by
        create), FailedPrecondition (a run pins the model it replaces)."""
        if not request.name:
            raise InvalidArgument("'model' (the new model's name) is required", param="model")
        base, files = request.derived.base, dict(request.files)
        if bool(base) == bool(files):
            raise InvalidArgument("give 'from' (a model to make it from) or 'files' (an uploaded GGUF), not "
                                  + ("both" if base else "neither"), param="from" if base else "files")
        run = self.orchestrator.pinned_run(request.name)
        if run is not None:
            raise FailedPrecondition(f"model '{request.name}' is pinned by run {run.run_id}; stop the run before "
                                     f"replacing the model (omg run stop {run.run_id})")
        record = await asyncio.to_thread(self._created, request)
        # Its workers (if it replaced a loaded model) hold the old template and window.
        await self.orchestrator.unload(request.name, reason="replaced by create")
        return self._shown(record)

    def _created(self, request: models_pb2.CreateModelRequest) -> assets_pb2.InstallRecord:
        """(On a thread.) Build, check and store the record CreateModel makes."""
        self.store.check_creatable(request.name)
        limit = self.settings.max_tokens_limit
        if request.derived.base:
            record = derived.derive(self.store.get(request.derived.base), request.name, request.derived)
            derived.check(record.derived, record, max_tokens_limit=limit)
            replaced = self.store.put_created(record)
        else:
            record = blobs.upload_record(self.hf_cache, request.name, dict(request.files))
            record.derived.CopyFrom(request.derived)
            derived.check(record.derived, record, max_tokens_limit=limit)
            linked = blobs.link(self.hf_cache, record)
            try:
                replaced = self.store.put_created(record)
            except BaseException:
                blobs.unlink(self.hf_cache, linked)
                raise
        if replaced is not None:
            maintenance.free_unused(self.store, replaced, self.hf_cache)
        return record

    async def DeleteModel(self, request: models_pb2.DeleteModelRequest) -> models_pb2.DeleteModelResponse:
        await asyncio.to_thread(self.store.require, request.name)  # NotFound before stopping anything
        await self.orchestrator.unload(request.name, reason="deleted")  # refused while a run pins it
        freed = await asyncio.to_thread(maintenance.remove_model, self.store, request.name, self.hf_cache)
        return models_pb2.DeleteModelResponse(freed_bytes=freed)

    async def AliasModel(self, request: models_pb2.AliasModelRequest) -> assets_pb2.InstallRecord:
        if not request.source or not request.destination:
            raise InvalidArgument("source and destination are required",
                                  param="source" if not request.source else "destination")
        return self._shown(await asyncio.to_thread(self.store.alias, request.source, request.destination))

    async def VerifyModels(self, request: models_pb2.VerifyModelsRequest) -> models_pb2.VerifyModelsResponse:
        checks = await self.maintenance.run(lambda: maintenance.verify(self.store, request.name))
        return models_pb2.VerifyModelsResponse(checks=[
            models_pb2.ArtifactCheck(model=c.model, filename=c.filename, ok=c.ok, expected=c.expected,
                                     actual=c.actual, problem=c.problem) for c in checks])

    async def GarbageCollect(self, request: models_pb2.GarbageCollectRequest) -> models_pb2.GarbageCollectResponse:
        report = await self.maintenance.run(lambda: maintenance.collect_garbage(
            self.store, self.hf_cache, dry_run=request.dry_run))
        return models_pb2.GarbageCollectResponse(removed=report.removed, freed_bytes=report.freed)

    async def DiskUsage(self, request: models_pb2.DiskUsageRequest) -> models_pb2.DiskUsageResponse:
        rows, total = await asyncio.to_thread(maintenance.disk_usage, self.store)
        return models_pb2.DiskUsageResponse(total_bytes=total, models=[
            models_pb2.ModelUsage(name=n, size_bytes=s, unique_bytes=u) for n, s, u in rows])


class Jobs:
    """JobService: pull jobs' state, progress, cancel, watch."""

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    async def GetJob(self, request: jobs_pb2.GetJobRequest) -> jobs_pb2.Job:
        return await self.jobs.get(request.id)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest) -> jobs_pb2.ListJobsResponse:
        return jobs_pb2.ListJobsResponse(jobs=await self.jobs.list())

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest) -> jobs_pb2.Job:
        return await self.jobs.cancel(request.id)

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest) -> AsyncIterator[jobs_pb2.Job]:
        async for job in self.jobs.watch(request.id):
            yield job
