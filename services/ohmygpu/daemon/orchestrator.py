"""The one internal inference path: model name -> worker -> streamed answer.

OpenAI, Ollama and the native gRPC ChatService all call `chat`/`complete` here with the
contract's own messages; they only translate at the edge. The first request for a model starts
its worker; a worker that dies is dropped, requests in flight get WorkerFailed, and the next
request starts a new one.

This module routes; what it routes through lives beside it, each in a module named for it:
nodes (daemon/nodes.py: the machines, node 0 this one), placement and eviction
(daemon/scheduler.py over the pure daemon/placement.py), admission (daemon/admission.py:
validation, queues and slots, keep_alive), crash accounting and the health patrol
(daemon/health.py), the worker pool (daemon/pool.py), one worker's process
(daemon/supervisor.py), and each stream's token counts and timings (daemon/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access, derived, sampling
from ohmygpu.core.audio_probe import probe_isolated
from ohmygpu.core.errors import (
    FailedPrecondition,
    OmgError,
    PermissionDenied,
    WorkerFailed,
)
from ohmygpu.core.estimate import for_spec
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon import admission, speech
from ohmygpu.daemon.admission import KeepAlive, Queues
from ohmygpu.daemon.devices import Inventory
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.health import Health
from ohmygpu.daemon.metrics import Metrics
from ohmygpu.daemon.nodes import Launcher, LocalNode, Node
from ohmygpu.daemon.pool import WorkerKey, WorkerPool, check_mode, worker_key
from ohmygpu.daemon.quarantine import RequestQuarantine, fingerprint
from ohmygpu.daemon.scheduler import Scheduler
from ohmygpu.daemon.specs import check_run, load_key, spec_for, with_run_defaults
from ohmygpu.daemon.supervisor import Worker, WorkerTrapped
from ohmygpu.daemon.uploads import Uploads
from ohmygpu.events.v1 import events_pb2
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.registry import RuntimeEntry, runtime_for, supports_gpu

log = logging.getLogger("ohmygpu.orchestrator")
M = TypeVar("M")
_Msg = TypeVar("_Msg", bound=Message)
R = TypeVar("R", runtime_pb2.ChatRequest, runtime_pb2.CompleteRequest)

__all__ = ["Launcher", "Orchestrator"]


class Orchestrator:
    """Owns the workers and routes requests to them."""

    def __init__(self, settings: Settings, store: ModelStore, *, launcher: Launcher | None = None,
                 inventory: Callable[[], Inventory] | None = None, events: EventBus | None = None,
                 clock: Callable[[], float] = time.time,
                 gpu_capable: Callable[[str], bool] = supports_gpu,
                 nodes: list[Node] | None = None, metrics: Metrics | None = None) -> None:
        self.events = events or EventBus()
        self.metrics = metrics or Metrics()  # token counts and timings of every stream (daemon/metrics.py)
        self.clock = clock  # wall clock for keep_alive; injected by tests
        self.settings = settings
        self.store = store
        self.workers = WorkerPool()
        self._starting: dict[WorkerKey, asyncio.Lock] = {}
        # Node 0 is this machine; `launcher`, `inventory` and `gpu_capable` shape it (tests do).
        self.local = LocalNode(settings, store, launcher=launcher, inventory=inventory, gpu_capable=gpu_capable)
        self.nodes: list[Node] = [self.local, *(nodes or [])]
        self.scheduler = Scheduler(settings, self.nodes)
        self.keep_alive = KeepAlive(settings, lambda: self.clock())
        self.queues = Queues(settings, self.events)
        self.health = Health(settings, self.events)
        self._reaper: asyncio.Task[None] | None = None
        self._patrol: asyncio.Task[None] | None = None
        self.pins: dict[WorkerKey, run_spec_pb2.RunSpec] = {}  # worker key -> the run that pins it
        self.uploads = Uploads(settings.home_path)

    # What callers read of the local node and the parts, under the names they always had.
    @property
    def inventory(self) -> Callable[[], Inventory]:
        return self.local.inventory

    @property
    def ram_budget(self) -> int:
        return self.local.ram_budget

    @property
    def run_dir(self) -> Path:
        return self.local.run_dir

    @property
    def log_dir(self) -> Path:
        return self.local.log_dir

    @property
    def default_keep_alive(self) -> float | None:
        return self.keep_alive.default

    @property
    def failed(self) -> dict[WorkerKey, str]:
        return self.health.failed

    @property
    def quarantine(self) -> RequestQuarantine:
        return self.health.quarantine

    async def worker_for(self, name: str, *, run: run_spec_pb2.RunSpec | None = None,
                         mode: int = run_spec_pb2.MODE_UNSPECIFIED,
                         record: assets_pb2.InstallRecord | None = None) -> Worker:
        """The live worker serving model `name` in `mode` (unspecified: the model's own mode),
        started if needed. With `run`, the worker must have the run's load options: one loaded
        with others is reloaded (only then).

        Raises ModelNotFound, InvalidArgument (a model of the wrong kind for `mode`),
        MissingExtra, WorkerFailed, NeverFits, Unavailable.
        """
        if record is None:
            record = await asyncio.to_thread(self.store.get, name)
        mode = check_mode(record, mode or (run.mode if run is not None else 0))
        key = worker_key(record, mode)
        worker = self.workers.get(key)
        if worker is not None and worker.alive and run is None:
            return worker
        run = run or self.pins.get(key)  # a restarted pinned model keeps its run's options
        self.health.check_not_failed(key, name)
        runtime = runtime_for(record)
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            self.health.check_not_failed(key, name)  # the load this request waited for may have failed it
            spec = spec_for(self.settings, record, runtime, run)
            spec.mode = mode
            worker = self.workers.get(key)
            if worker is not None and worker.alive:
                if run is None or (worker.load_key == load_key(spec) and self.scheduler.matches(worker.node, spec)):
                    return worker
                await self._unload(key, reason="reloading with new load options or on another node")
                worker = None
            if worker is not None:
                log.warning("worker for %s %s; starting a new one", key, worker.exit_description())
                self.health.worker_died(key, worker)
                await worker.stop()
                if key in self.failed:
                    raise WorkerFailed(f"model '{name}' is marked failed: {self.failed[key]}", model=name)
            return await self._start(name, key, runtime, record, spec)

    async def _start(self, name: str, key: WorkerKey, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                     spec: run_spec_pb2.RunSpec) -> Worker:
        """Make room, place and launch the worker for `key` (under its start lock)."""
        # One estimate, of the spec the worker will load (a run's context, slots, mode), for
        # both what to evict and where to place.
        base = await asyncio.to_thread(self.store.base_of, record)  # an adapter's; else None
        weights = base or record
        need = for_spec(weights, spec).total + (record.size_bytes if base is not None else 0)
        node = await self.scheduler.make_room(key, need, weights.gguf.block_count, spec, self.workers,
                                              lambda k, why: self._unload(k, reason=why), record)
        asked = load_key(spec)  # what was asked, before placement fills in the device
        placement = await self.scheduler.place(node, weights, spec, need, self.workers)
        where = placement.device if node.index == 0 else f"node {node.name} ({placement.device})"
        self.events.publish(events_pb2.EVENT_KIND_LOAD, f"loading {key} on {where}",
                            subject=f"model:{key}", runtime=spec.runtime, node=node.name)
        try:
            worker = await node.launch(name, runtime, record, spec)
        except OmgError as e:
            self.events.publish(events_pb2.EVENT_KIND_ERROR, f"loading {key} failed: {e.message}",
                                subject=f"model:{key}", level=events_pb2.LEVEL_ERROR)
            if isinstance(e, WorkerTrapped):
                self.health.mark_failed(key, e.message)
            elif isinstance(e, WorkerFailed):
                # A worker that dies or fails on every load counts like one that crashes
                # while serving: past max_crashes it is not started again.
                self.health.record_crash(key, f"load failed: {e.message}")
            raise
        worker.load_key = asked
        worker.key, worker.mode = key, spec.mode
        worker.pinned = key in self.pins
        worker.device, worker.vram_estimate = placement.device, placement.vram
        self.workers[key] = worker
        self.health.started(key)
        self.events.publish(events_pb2.EVENT_KIND_LOAD, f"loaded {key} in {worker.load_ns / 1e9:.2f}s"
                            + ("" if node.index == 0 else f" on node {node.name}"),
                            subject=f"model:{key}", completed=1, total=1, unit="model", node=node.name,
                            pid=str(worker.pid), memory_bytes=str(worker.memory_bytes))
        self.keep_alive.set_expiry(worker, "")
        loop = asyncio.get_running_loop()
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(self._reap_idle())
        if self._patrol is None or self._patrol.done():
            self._patrol = loop.create_task(self.health.patrol(self.workers))
        return worker

    async def start_trainer(self, key: WorkerKey, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                            spec: run_spec_pb2.RunSpec) -> Worker:
        """A worker for a training job (daemon/training.py) under `key`, placed and budgeted
        like any worker (evicting idle models to make room), held until stop_trainer: never
        evicted or expired while it trains. Raises like worker_for."""
        self.health.check_not_failed(key, key.model)
        async with self._starting.setdefault(key, asyncio.Lock()):
            old = self.workers.get(key)
            if old is not None:
                await self._unload(key, reason="a training job starts again")
            worker = await self._start(key.model, key, runtime, record, spec)
            worker.pinned, worker.expires_at = True, None
            return worker

    async def stop_trainer(self, key: WorkerKey, reason: str) -> None:
        """Stop a training job's worker."""
        await self._unload(key, reason=reason)

    async def check_run(self, name: str, run: run_spec_pb2.RunSpec) -> None:
        """Raise InvalidArgument (or ModelNotFound) for a run that cannot be given what it asks:
        checked before the run is recorded, so a bad one leaves nothing behind."""
        record = await asyncio.to_thread(self.store.get, name)
        check_run(run, record, runtime_for(record))

    async def pin(self, name: str, run: run_spec_pb2.RunSpec) -> Worker:
        """Load `name` with the run's options and keep it loaded until unpinned."""
        worker = await self.worker_for(name, run=run)
        self.pins[worker.key] = run
        self.queues.resize(worker.key)  # re-made at the run's width on the next request
        worker.pinned = True
        worker.expires_at = None
        return worker

    async def unpin(self, name: str) -> None:
        """End a pin: every worker of the model is unloaded (its embeddings worker too)."""
        for key in [k for k in self.pins if k.model == name]:
            del self.pins[key]
        for worker in self.workers.values():
            if worker.key.model == name:
                worker.pinned = False
        await self._unload(name, reason="run stopped")

    def set_keep_alive(self, worker: Worker, keep_alive: str) -> None:
        """Apply a request's keep_alive (ollama syntax; empty: the default) to an idle worker.
        Raises PermissionDenied for a keep_alive that unloads from a caller who may not."""
        self.keep_alive.check(keep_alive)
        self.keep_alive.set_expiry(worker, keep_alive)

    async def unload(self, name: str, *, reason: str = "unloaded by request") -> bool:
        """Unload model `name` at a client's request, by any path (UnloadModel, Ollama's
        keep_alive 0 unload, DeleteModel): one rule for all. Returns whether it was loaded.

        Raises FailedPrecondition for a model a run pins (stop the run instead) and
        PermissionDenied when an admin token is set and this request did not present it."""
        run = self.pinned_run(name)
        if run is not None:
            raise FailedPrecondition(f"model '{name}' is pinned by run {run.run_id}; stop the run instead "
                                     f"(omg run stop {run.run_id})")
        if not access.caller_manages(self.settings.admin_token):
            raise PermissionDenied("unloading a model manages the daemon and needs the admin token (OMG_ADMIN_TOKEN)")
        return await self._unload(name, reason=reason)

    async def _unload(self, target: str | WorkerKey, *, reason: str) -> bool:
        """Stop the workers serving `target`: every worker of a model name, or the one of a key.
        Returns whether one was loaded. Iterates a snapshot: stopping awaits, and the pool may
        change meanwhile (a request ending, the patrol dropping a hung worker)."""
        keys = [target] if isinstance(target, WorkerKey) else self.workers.keys_of(target)
        stopped = False
        for key in keys:
            worker = self.workers.pop(key, None)
            if worker is None:
                continue
            stopped = True
            await worker.stop()
            log.info("unloaded %s (%s)", key, reason)
            self.events.publish(events_pb2.EVENT_KIND_UNLOAD, f"unloaded {key}: {reason}",
                                subject=f"model:{key}", reason=reason)
        return stopped

    async def _reap_idle(self) -> None:
        # keep_alive: unload idle models whose time is up, while any is loaded.
        while self.workers:
            await self.reap_expired()
            await asyncio.sleep(0.25)

    async def reap_expired(self) -> list[str]:
        """Unload idle, unpinned workers whose keep_alive has run out; returns their labels."""
        return await self.keep_alive.reap(self.workers, lambda k: self._unload(k, reason="keep_alive expired"))

    def _width(self, key: WorkerKey) -> int:
        """As many requests at once as the worker has slots: a pinned run's max_concurrency,
        else OMG_NUM_PARALLEL."""
        pinned = self.pins.get(key)
        return (pinned.resources.max_concurrency if pinned is not None else 0) or self.settings.num_parallel

    def pinned_run(self, name: str) -> run_spec_pb2.RunSpec | None:
        """The run pinning model `name` (in any mode), if any."""
        return next((run for key, run in self.pins.items() if key.model == name), None)

    def pinned_worker(self, name: str) -> Worker | None:
        """The live worker a run pins for model `name`, if any."""
        for key in self.pins:
            worker = self.workers.get(key)
            if key.model == name and worker is not None and worker.alive:
                return worker
        return None

    def queued(self, key: WorkerKey) -> int:
        """Requests waiting for a slot of the worker `key`."""
        return self.queues.queued(key)

    def loading(self) -> list[WorkerKey]:
        """Worker keys being started (or reloaded) now."""
        return [key for key, lock in list(self._starting.items()) if lock.locked()]

    async def _stream(self, name: str, mode: int, call: Callable[[Worker], grpc.aio.Call],
                      keep_alive: str = "", record: assets_pb2.InstallRecord | None = None,
                      request: Message | None = None) -> AsyncIterator[M]:
        self.keep_alive.check(keep_alive)  # a bad or forbidden value fails before any work
        admitted = time.monotonic()  # time to first token counts the queue and a load
        fp = fingerprint(request) if request is not None else None
        if fp is not None:
            self.health.quarantine.check(fp)  # a request that killed a worker is not queued again
        # The kind check comes before the queue: a wrong model is a 400 at once, not after a wait.
        if record is None:
            record = await asyncio.to_thread(self.store.get, name)
        mode = check_mode(record, mode)
        key = worker_key(record, mode)
        async with self.queues.slot(key, self._width(key)):
            async for message in self._stream_in_slot(record, mode, call, keep_alive, fp, admitted):
                yield message

    async def _stream_in_slot(self, record: assets_pb2.InstallRecord, mode: int,
                              call: Callable[[Worker], grpc.aio.Call], keep_alive: str,
                              fp: str | None = None, admitted: float = 0.0) -> AsyncIterator[M]:
        name = record.name
        meter = self.metrics.meter(name, mode, admitted or time.monotonic())
        before = self.workers.get(worker_key(record, mode))
        worker = await self.worker_for(name, mode=mode, record=record)
        # A worker started for this request (or one it waited for while it loaded) is this
        # request's load: its last message's timings say how long it took (Ollama's load_duration).
        load_ns = worker.load_ns if worker is not before else 0
        worker.in_flight += 1
        stream = call(worker)
        try:
            if isinstance(stream, grpc.aio.UnaryUnaryCall):
                yield _with_load_time(await stream, load_ns)
            else:
                async for message in stream:
                    meter.message(message)
                    # Only a generation's last message has a finish reason (and usage and timings).
                    if getattr(message, "finish_reason", 0):
                        if message.timings.eval_ns and message.usage.completion_tokens > 1:
                            worker.tokens_per_second = (message.usage.completion_tokens - 1) / (message.timings.eval_ns / 1e9)
                        message = _with_load_time(message, load_ns)
                    yield message
        except grpc.aio.AioRpcError as e:
            raise await self.health.worker_error(self.workers, worker, e, fp) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own request was cancelled (the client went away)
            # The call was cancelled under us: the supervisor stopped this worker (hung, crashed)
            # and closed its channel. The client gets an error, not a dropped connection.
            raise WorkerFailed(f"the worker serving '{worker.model}' was stopped during the request "
                               f"({worker.exit_description()}); the next request starts a new one",
                               model=worker.model) from None
        finally:
            worker.in_flight -= 1
            worker.last_used = time.monotonic()
            stream.cancel()
            if worker.in_flight == 0:
                self.keep_alive.set_expiry(worker, keep_alive)
            # "Last used" is a disk write: done after the answer, never on its critical path.
            asyncio.get_running_loop().run_in_executor(None, self.store.touch, name)


    def _with_defaults(self, request: R, record: assets_pb2.InstallRecord) -> R:
        """The request with the defaults of its model for what it leaves unset: the sampling
        defaults of a run pinning the model (RunSpec.params), then a derived model's own
        (core/derived.py), and, for a chat, a derived model's system prompt and messages. The
        request itself when there is nothing to add."""
        run = self.pinned_run(record.name)
        layers = [run.params] if run is not None and run.HasField("params") else []
        made = record.HasField("derived")
        if made and record.derived.HasField("params"):
            layers.append(derived.sampling_params(record.derived))
        chat = isinstance(request, runtime_pb2.ChatRequest) and made and derived.adds_to_chat(record.derived)
        if not layers and not chat:
            return request
        out = type(request)()
        out.CopyFrom(request)
        for defaults in layers:
            out.params.CopyFrom(with_run_defaults(out.params, defaults))  # type: ignore[attr-defined]
        if chat:
            conversation = derived.conversation(out.messages, record.derived)  # type: ignore[attr-defined]
            del out.messages[:]  # type: ignore[attr-defined]
            out.messages.extend(conversation)  # type: ignore[attr-defined]
        return out

    async def chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        """Stream a chat answer; raises InvalidArgument, ModelNotFound, WorkerFailed, ..."""
        admission.check_chat(request, self.settings)
        record = await asyncio.to_thread(self.store.get, request.model)
        if request.HasField("think") and request.think:
            admission.check_thinking(request, record)
        admission.check_features(request, record)
        request = self._with_defaults(request, record)
        async for message in self._stream(request.model, run_spec_pb2.MODE_CHAT,
                                          lambda w: w.stub.Chat(request), request.keep_alive,
                                          record, request):
            yield message

    async def complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        """Stream a raw completion; raises like chat."""
        admission.check_sampling(request.params, self.settings)
        sampling.check_logprobs(request.logprobs, request.top_logprobs)
        record = await asyncio.to_thread(self.store.get, request.model)
        admission.check_features(request, record)
        request = self._with_defaults(request, record)
        async for message in self._stream(request.model, run_spec_pb2.MODE_COMPLETION,
                                          lambda w: w.stub.Complete(request), request.keep_alive,
                                          record, request):
            yield message

    async def count_tokens(self, request: runtime_pb2.CountTokensRequest) -> runtime_pb2.CountTokensResponse:
        """The prompt tokens of a chat, counted by its model's chat worker (which renders the
        template); raises like chat (ContextLengthExceeded for a prompt over the window)."""
        record = await asyncio.to_thread(self.store.get, request.chat.model)
        chat = self._with_defaults(request.chat, record)  # what a chat would send: a derived model's start too
        if chat is not request.chat:
            request = runtime_pb2.CountTokensRequest(chat=chat)
        async for response in self._stream(chat.model, run_spec_pb2.MODE_CHAT,
                                           lambda w: w.stub.CountTokens(request), chat.keep_alive,
                                           record, request):
            return response
        raise WorkerFailed(f"worker for '{chat.model}' gave no token count", model=chat.model)

    async def embed(self, request: runtime_pb2.EmbedRequest) -> runtime_pb2.EmbedResponse:
        """Embed a batch of texts; raises InvalidArgument (empty input, a whisper model), ..."""
        admission.check_embed(request)
        async for response in self._stream(request.model, run_spec_pb2.MODE_EMBEDDINGS,
                                           lambda w: w.stub.Embed(request), request.keep_alive,
                                           request=request):
            return response
        raise WorkerFailed(f"worker for '{request.model}' gave no embeddings", model=request.model)

    async def rerank(self, request: runtime_pb2.RerankRequest) -> runtime_pb2.RerankResponse:
        """Score documents against a query with a reranker; raises InvalidArgument (no query or
        documents, a model that is not a reranker), ModelNotFound, WorkerFailed, ..."""
        admission.check_rerank(request)
        async for response in self._stream(request.model, run_spec_pb2.MODE_RERANK,
                                           lambda w: w.stub.Rerank(request), request.keep_alive,
                                           request=request):
            return response
        raise WorkerFailed(f"worker for '{request.model}' gave no scores", model=request.model)

    async def generate_image(self, request: runtime_pb2.GenerateImageRequest,
                             ) -> AsyncIterator[runtime_pb2.GenerateImageResponse]:
        """Stream an image generation's progress and images; raises InvalidArgument (bounds, a
        model that is not an image model), ModelNotFound, WorkerFailed, ..."""
        admission.check_image(request, self.settings)
        request.model = await asyncio.to_thread(admission.image_model, request.model, self.store)
        subject, count = f"model:{request.model}", request.count or 1
        publish = self.events.publish
        publish(events_pb2.EVENT_KIND_GENERATION, f"{request.model}: generating {count} image(s)",
                subject=subject, state="started", images=str(count))
        state = "failed"
        made = 0
        try:
            async for message in self._stream(request.model, run_spec_pb2.MODE_IMAGE,
                                              lambda w: w.stub.GenerateImage(request), request.keep_alive,
                                              request=request):
                if message.HasField("progress"):
                    p = message.progress
                    publish(events_pb2.EVENT_KIND_GENERATION, f"{request.model}: image {p.image + 1}/{p.images}, "
                            f"step {p.step}/{p.steps}", subject=subject, level=events_pb2.LEVEL_DEBUG,
                            completed=p.step, total=p.steps, unit="steps", state="progress",
                            image=str(p.image + 1), images=str(p.images))
                elif message.HasField("image"):
                    made += 1
                yield message
            state = "done"
        except (asyncio.CancelledError, GeneratorExit):
            state = "cancelled"
            raise
        finally:
            publish(events_pb2.EVENT_KIND_GENERATION, f"{request.model}: {made} of {count} image(s), {state}",
                    subject=subject, state=state, images=str(made),
                    level=events_pb2.LEVEL_WARNING if state == "failed" else events_pb2.LEVEL_INFO)

    async def transcribe(self, request: runtime_pb2.TranscribeRequest, audio: Path,
                         ) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        """Stream the transcription of the audio file `audio` (a daemon-owned upload): its info,
        then segments. Raises InvalidArgument for audio that does not decode or is empty, or a
        model that is not a whisper model; the check runs before any model loads."""
        admission.check_transcribe(request)
        request.model = await asyncio.to_thread(self.whisper_model, request.model)
        record = await asyncio.to_thread(self.store.get, request.model)
        check_mode(record, run_spec_pb2.MODE_TRANSCRIPTION)
        # Untrusted bytes are parsed in a bounded child process: a decoder crash costs this request.
        await probe_isolated(audio, max_seconds=self.settings.max_audio_seconds,
                             timeout_s=self.settings.audio_probe_timeout_s,
                             memory_mb=self.settings.audio_probe_memory_mb)
        request.audio_path = str(audio)
        request.ClearField("audio")
        if not request.beam_size:
            request.beam_size = max(1, self.settings.whisper_beam_size)
        async for message in self._stream(request.model, run_spec_pb2.MODE_TRANSCRIPTION,
                                          lambda w: w.stub.Transcribe(request), request.keep_alive, record):
            yield message

    async def speak(self, request: runtime_pb2.SpeakRequest) -> AsyncIterator[runtime_pb2.SpeakResponse]:
        """Stream speech for `request.input`; raises InvalidArgument (empty or over-long input,
        an unknown voice, a model that is not a speech model) before any model loads, ..."""
        request.model = await asyncio.to_thread(speech.tts_model, request.model, self.settings, self.store)
        record = await asyncio.to_thread(self.store.get, request.model)
        check_mode(record, run_spec_pb2.MODE_SPEECH)
        speech.check_speak(request, record, self.settings)
        async for message in self._stream(request.model, run_spec_pb2.MODE_SPEECH,
                                          lambda w: w.stub.Speak(request), request.keep_alive, record, request):
            yield message

    def whisper_model(self, name: str) -> str:
        """The model a transcription uses (see admission.whisper_model: OpenAI's "whisper-1")."""
        return admission.whisper_model(name, self.settings, self.store)

    async def loaded(self) -> list[tuple[Worker, runtime_pb2.GetStatusResponse | None]]:
        """Live workers with their status (None when a worker does not answer in time)."""
        out = []
        for worker in list(self.workers.values()):
            if not worker.alive:
                continue
            try:
                status = await worker.stub.GetStatus(runtime_pb2.GetStatusRequest(), timeout=2)
            except grpc.aio.AioRpcError:
                status = None
            out.append((worker, status))
        return out

    def node_name(self, index: int) -> str:
        """The name of node `index` ("local" for this machine)."""
        return self.nodes[index].name if 0 <= index < len(self.nodes) else "?"

    async def node_down(self, node: Node, reason: str) -> None:
        """Node `node` is gone: its workers leave the pool (calls in flight on them end with an
        error), and the models runs pin there are placed again on the nodes that are up."""
        lost = [k for k, w in self.workers.items() if w.node == node.index]
        for key in lost:
            self.workers.pop(key, None)
            self.events.publish(events_pb2.EVENT_KIND_UNLOAD, f"unloaded {key}: node {node.name} is down ({reason})",
                                subject=f"model:{key}", reason=f"node {node.name} down", node=node.name)
        mark = getattr(node, "mark_down", None)
        if mark is not None:
            await mark(reason)
        for key in lost:
            if key in self.pins:
                asyncio.get_running_loop().create_task(self._replace_pinned(key, node.name))

    async def _replace_pinned(self, key: WorkerKey, gone: str) -> None:
        run = self.pins.get(key)
        if run is None:
            return
        try:
            worker = await self.worker_for(key.model, run=run, mode=key.mode)
        except OmgError as e:
            log.error("run %s (%s) lost node %s and could not be placed again: %s", run.run_id, key, gone, e.message)
            self.events.publish(events_pb2.EVENT_KIND_RUN, f"run {run.run_id}: {key} lost node {gone} and waits "
                                f"for room: {e.message}", subject=f"run:{run.run_id}", level=events_pb2.LEVEL_ERROR)
            return
        worker.pinned, worker.expires_at = True, None
        self.events.publish(events_pb2.EVENT_KIND_RUN, f"run {run.run_id}: {key} placed again on node "
                            f"{self.node_name(worker.node)} after node {gone} went down", subject=f"run:{run.run_id}")

    async def shutdown(self) -> None:
        """Stop every worker."""
        for task in (self._reaper, self._patrol):
            if task is not None:
                task.cancel()
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for node in self.nodes:
            node.close()


def _with_load_time(message: _Msg, load_ns: int) -> _Msg:
    """`message` with timings.load_ns set, when it has timings and this request loaded its model."""
    if load_ns and "timings" in message.DESCRIPTOR.fields_by_name:
        message.timings.load_ns = load_ns  # type: ignore[attr-defined]  # checked just above
    return message
