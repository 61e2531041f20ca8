"""The daemon's one in-process API: the only entrance for both the gRPC servicers
(daemon/services.py) and the HTTP gateway (gateway/*).

Each proto service has one object here whose methods carry the RPC's name and take and return
its messages (`api.service("ModelService").ListModels(request)`), with no gRPC context: the
servicers and the HTTP management routes are translators over them. Beside them, the calls the
HTTP dialects need in their own shape: chat / complete / count_tokens / embed / transcribe, load
and unload, model records, pull jobs, uploaded blobs. Errors are core/errors.py's; the caller's
role is the one access.check set at the edge (core/access.py), read where a method needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf import descriptor
from ohmygpu.api.v1 import (
    audio_pb2,
    chat_pb2,
    embeddings_pb2,
    events_pb2,
    images_pb2,
    jobs_pb2,
    models_pb2,
    runs_pb2,
    system_pb2,
    train_pb2,
)
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import blobs
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.api.inference import Inference, check_messages
from ohmygpu.daemon.api.models import Jobs, Models
from ohmygpu.daemon.api.runs import Events, Runs
from ohmygpu.daemon.api.system import System
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.jobs import JobManager
from ohmygpu.daemon.metrics import Metrics
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.responses import ResponseStore, StoredResponse
from ohmygpu.daemon.readiness import Readiness
from ohmygpu.daemon.runs import RunManager
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

# The daemon's public services, by proto name.
SERVICES: dict[str, descriptor.ServiceDescriptor] = {
    "ModelService": models_pb2.DESCRIPTOR.services_by_name["ModelService"],
    "ChatService": chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    "SystemService": system_pb2.DESCRIPTOR.services_by_name["SystemService"],
    "JobService": jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
    "EventService": events_pb2.DESCRIPTOR.services_by_name["EventService"],
    "RunService": runs_pb2.DESCRIPTOR.services_by_name["RunService"],
    "EmbeddingService": embeddings_pb2.DESCRIPTOR.services_by_name["EmbeddingService"],
    "AudioService": audio_pb2.DESCRIPTOR.services_by_name["AudioService"],
    "ImageService": images_pb2.DESCRIPTOR.services_by_name["ImageService"],
    "TrainService": train_pb2.DESCRIPTOR.services_by_name["TrainService"],
}


class Train:
    """TrainService: training jobs (daemon/training.py); without one, every RPC is UNIMPLEMENTED."""

    def __init__(self, training: Any) -> None:
        self._training = training

    async def CreateTrainJob(self, request: train_pb2.CreateTrainJobRequest) -> jobs_pb2.Job:
        if self._training is None:
            from ohmygpu.core.errors import Unimplemented

            raise Unimplemented("this daemon runs no training jobs")
        return await self._training.submit(request)


class DaemonAPI:
    """What the daemon offers its edges, in-process."""

    def __init__(self, settings: Settings, store: ModelStore, orchestrator: Orchestrator, *,
                 jobs: JobManager, runs: RunManager, events: EventBus,
                 request_shutdown: Callable[[], None] = lambda: None, nodes: Any = None,
                 metrics: Metrics | None = None, readiness: Readiness | None = None,
                 training: Any = None) -> None:
        self.settings = settings
        # Operations: what /metrics renders and the HTTP edge observes into (daemon/metrics.py),
        # and whether the daemon has finished starting (/readyz; daemon/readiness.py).
        self.metrics = metrics or Metrics()
        self.readiness = readiness or Readiness()
        self._store = store
        self._orchestrator = orchestrator
        self._jobs = jobs
        self._responses: ResponseStore | None = None
        self.models = Models(settings, store, orchestrator, jobs)
        self.jobs = Jobs(jobs)
        self.runs = Runs(runs)
        self.events = Events(events)
        self.inference = Inference(settings, orchestrator)
        self.system = System(settings, store, orchestrator, request_shutdown, nodes, self.readiness)
        self._services: dict[str, object] = {
            "ModelService": self.models, "JobService": self.jobs, "RunService": self.runs,
            "EventService": self.events, "SystemService": self.system, "ChatService": self.inference,
            "EmbeddingService": self.inference, "AudioService": self.inference,
            "ImageService": self.inference, "TrainService": Train(training)}

    @property
    def responses(self) -> ResponseStore:
        """Stored responses of OpenAI's Responses API (opened on first use: the index's table)."""
        if self._responses is None:
            self._responses = ResponseStore(Path(self.settings.home))
        return self._responses

    def service(self, name: str) -> Any:
        """The object implementing proto service `name` ("ModelService", ...)."""
        return self._services[name]

    # Inference, in the shape the HTTP dialects use: the orchestrator's streams themselves (no
    # extra hop per token), after the checks the gRPC methods make (inference.py).
    def chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        """Raises InvalidArgument for empty messages at once; the rest as the orchestrator's chat."""
        check_messages(request)
        return self._orchestrator.chat(request)

    def complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        return self._orchestrator.complete(request)

    async def count_tokens(self, request: runtime_pb2.CountTokensRequest) -> runtime_pb2.CountTokensResponse:
        """The prompt tokens of `request.chat` as its model renders it; raises like chat."""
        return await self.inference.CountTokens(request)

    async def embed(self, request: runtime_pb2.EmbedRequest) -> runtime_pb2.EmbedResponse:
        return await self._orchestrator.embed(request)

    async def rerank(self, request: runtime_pb2.RerankRequest) -> runtime_pb2.RerankResponse:
        return await self._orchestrator.rerank(request)

    def generate_image(self, request: runtime_pb2.GenerateImageRequest,
                       ) -> AsyncIterator[runtime_pb2.GenerateImageResponse]:
        return self._orchestrator.generate_image(request)

    def speak(self, request: runtime_pb2.SpeakRequest) -> AsyncIterator[runtime_pb2.SpeakResponse]:
        """Speech for `request.input`, streamed as the worker makes it; raises like the orchestrator's speak."""
        return self._orchestrator.speak(request)

    async def list_voices(self, model: str = "") -> runtime_pb2.ListVoicesResponse:
        return await self.inference.ListVoices(runtime_pb2.ListVoicesRequest(model=model))

    @contextlib.contextmanager
    def upload(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A private daemon-owned file for an upload, open for writing; removed when the block ends."""
        with self._orchestrator.uploads.new_file() as held:
            yield held

    def transcribe(self, request: runtime_pb2.TranscribeRequest, upload: Path,
                   ) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        """Transcribe the file of an open `upload()` block."""
        return self._orchestrator.transcribe(request, upload)

    # Files uploaded to make a model from (Ollama's /api/blobs; ModelService.CreateModel names them).
    async def blob_exists(self, digest: str) -> bool:
        """Whether blob `digest` ("sha256:<hex>") was uploaded; raises InvalidDigest."""
        return await asyncio.to_thread(blobs.exists, self.models.hf_cache, digest)

    async def receive_blob(self, digest: str, chunks: AsyncIterator[bytes], *, declared: int | None = None) -> int:
        """Keep the bytes of `chunks` as blob `digest` once they hash to it (core/blobs.py
        `receive`, bounded by OMG_MAX_BLOB_GB); returns their size."""
        return await blobs.receive(self.models.hf_cache, digest, chunks, limit=self.settings.max_blob_gb << 30,
                                   declared=declared)

    # Loading, as Ollama's empty requests and keep_alive ask for it.
    async def load(self, model: str, mode: int = run_spec_pb2.MODE_UNSPECIFIED, keep_alive: str = "") -> None:
        """Load `model` for `mode` (unspecified: the model's own) and apply a request's
        keep_alive (ollama syntax; empty: the default)."""
        worker = await self._orchestrator.worker_for(model, mode=mode)
        self._orchestrator.set_keep_alive(worker, keep_alive)

    async def unload(self, model: str) -> bool:
        """Unload `model` by the one unload rule; returns whether it was loaded."""
        return await self._orchestrator.unload(model)

    # Model records, whole (the HTTP dialects show names, sizes, digests, never paths).
    async def list_records(self) -> list[assets_pb2.InstallRecord]:
        return await asyncio.to_thread(self._store.list)

    async def get_record(self, name: str) -> assets_pb2.InstallRecord:
        """Raises ModelNotFound."""
        return await asyncio.to_thread(self._store.get, name)

    # Pull jobs.
    async def pull(self, source: str) -> jobs_pb2.Job:
        return await self.models.InstallModel(models_pb2.InstallModelRequest(source=source))

    def watch_job(self, job_id: str) -> AsyncIterator[jobs_pb2.Job]:
        """The job's states until it ends (the current one first)."""
        return self._jobs.watch(job_id)

    async def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        return await self.jobs.CancelJob(jobs_pb2.CancelJobRequest(id=job_id))


__all__ = ["SERVICES", "DaemonAPI", "StoredResponse"]
