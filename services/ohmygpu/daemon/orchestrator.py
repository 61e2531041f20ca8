"""The one internal inference path: model name -> worker -> streamed answer.

OpenAI, Ollama and the native gRPC ChatService all call `chat`/`complete` here with the
contract's own messages; they only translate at the edge. The first request for a model starts
its worker; a worker that dies is dropped, requests in flight get WorkerFailed, and the next
request starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access
from ohmygpu.core.audio_probe import probe_isolated
from ohmygpu.core.durations import parse_keep_alive
from ohmygpu.core.errors import (
    BY_GRPC_CODE,
    BY_REASON,
    FailedPrecondition,
    InvalidArgument,
    OmgError,
    PermissionDenied,
    ServerBusy,
    WorkerFailed,
)
from ohmygpu.core.estimate import for_spec
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Inventory, probe
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.placement import DevicePlacement, Resident, choose_evictions, place_on_device
from ohmygpu.daemon.pool import WorkerKey, WorkerPool, check_mode, worker_key
from ohmygpu.daemon.quarantine import RequestQuarantine, fingerprint
from ohmygpu.daemon.supervisor import Worker, WorkerTrapped, socket_dir
from ohmygpu.daemon.uploads import Uploads
from ohmygpu.events.v1 import events_pb2
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.registry import RuntimeEntry, runtime_for, supports_gpu

log = logging.getLogger("ohmygpu.orchestrator")
M = TypeVar("M")

# Launches a worker for a record; injected so tests can shape failures.
Launcher = Callable[[str, RuntimeEntry, assets_pb2.InstallRecord, run_spec_pb2.RunSpec], Awaitable[Worker]]


class Orchestrator:
    """Owns the workers and routes requests to them."""

    def __init__(self, settings: Settings, store: ModelStore, *, launcher: Launcher | None = None,
                 inventory: Callable[[], Inventory] | None = None, events: EventBus | None = None,
                 clock: Callable[[], float] = time.time,
                 gpu_capable: Callable[[str], bool] = supports_gpu) -> None:
        self.events = events or EventBus()
        self.clock = clock  # wall clock for keep_alive; injected by tests
        self.settings = settings
        self.store = store
        self.workers = WorkerPool()
        self._starting: dict[WorkerKey, asyncio.Lock] = {}
        self._launcher = launcher or self._launch
        self._run_dir: Path | None = None  # the worker socket directory, made at the first launch
        self.log_dir = settings.home_path / "logs"
        self.default_keep_alive = parse_keep_alive(settings.keep_alive)
        self.inventory = inventory or probe
        self.gpu_capable = gpu_capable  # runtime name -> whether its library can use a GPU
        inv = self.inventory()
        self.ram_budget = (settings.ram_budget_mb << 20) if settings.ram_budget_mb > 0 \
            else int(inv.ram_available * 0.9)
        self._reaper: asyncio.Task[None] | None = None
        self._slots: dict[WorkerKey, asyncio.Semaphore] = {}
        self._patrol: asyncio.Task[None] | None = None
        self._crashes: dict[WorkerKey, list[float]] = {}
        self.failed: dict[WorkerKey, str] = {}  # worker key -> why it is no longer restarted
        self.quarantine = RequestQuarantine()  # requests that killed a worker alone
        self.pins: dict[WorkerKey, run_spec_pb2.RunSpec] = {}  # worker key -> the run that pins it
        self._waiting: dict[WorkerKey, int] = {}
        self.uploads = Uploads(settings.home_path)

    @property
    def run_dir(self) -> Path:
        """This daemon's private worker socket directory (see supervisor.socket_dir)."""
        if self._run_dir is None:
            self._run_dir = socket_dir()
        return self._run_dir

    async def _launch(self, name: str, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                      spec: run_spec_pb2.RunSpec) -> Worker:
        worker = Worker(name, runtime, self.run_dir, self.log_dir)
        await worker.start(record, spec, timeout_s=self.settings.worker_start_timeout_s)
        return worker

    def _spec_for(self, record: assets_pb2.InstallRecord, runtime: RuntimeEntry,
                  run: run_spec_pb2.RunSpec | None = None) -> run_spec_pb2.RunSpec:
        """The RunSpec a worker loads with: daemon defaults, overridden by a run's resources."""
        spec = run_spec_pb2.RunSpec(
            model=record.ref, revision=record.revision, runtime=runtime.name,
            mode=run_spec_pb2.MODE_CHAT,
            resources=run_spec_pb2.Resources(
                cpu_threads=self.settings.num_threads,
                context_length=self.settings.context_length,
                max_concurrency=max(1, self.settings.num_parallel)),
        )
        if run is not None:
            res = run.resources
            if res.context_length:
                spec.resources.context_length = res.context_length
            if res.cpu_threads:
                spec.resources.cpu_threads = res.cpu_threads
            if res.HasField("gpu_layers"):
                spec.resources.gpu_layers = res.gpu_layers
            if res.device:
                spec.resources.device = res.device
            if res.max_concurrency:
                spec.resources.max_concurrency = res.max_concurrency
            if run.mode:
                spec.mode = run.mode
            spec.run_id = run.run_id
        spec.extensions["template_timeout_s"].number_value = self.settings.template_timeout_s
        if runtime.name == "whisper":
            spec.extensions["compute_type"].string_value = self.settings.whisper_compute_type
        return spec

    @staticmethod
    def _load_key(spec: run_spec_pb2.RunSpec) -> tuple[object, ...]:
        r = spec.resources
        return (spec.mode, r.context_length, r.cpu_threads, r.max_concurrency,
                r.gpu_layers if r.HasField("gpu_layers") else None)

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
        self._check_not_failed(key, name)
        runtime = runtime_for(record)
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            self._check_not_failed(key, name)  # the load this request waited for may have failed it
            spec = self._spec_for(record, runtime, run)
            spec.mode = mode
            worker = self.workers.get(key)
            if worker is not None and worker.alive:
                if run is None or worker.load_key == self._load_key(spec):
                    return worker
                await self._unload(key, reason="reloading with new load options")
                worker = None
            if worker is not None:
                log.warning("worker for %s %s; starting a new one", key, worker.exit_description())
                self._worker_died(key, worker)
                await worker.stop()
                if key in self.failed:
                    raise WorkerFailed(f"model '{name}' is marked failed: {self.failed[key]}", model=name)
            # One estimate, of the spec the worker will load (a run's context, slots, mode), for
            # both what to evict and where to place.
            need = for_spec(record, spec).total
            await self._make_room(key, need)
            load_key = self._load_key(spec)  # what was asked, before placement fills in the device
            placement = await self._place(record, spec, need)
            self.events.publish(events_pb2.EVENT_KIND_LOAD, f"loading {key} on {placement.device}",
                                subject=f"model:{key}", runtime=runtime.name)
            try:
                worker = await self._launcher(name, runtime, record, spec)
            except OmgError as e:
                self.events.publish(events_pb2.EVENT_KIND_ERROR, f"loading {key} failed: {e.message}",
                                    subject=f"model:{key}", level=events_pb2.LEVEL_ERROR)
                if isinstance(e, WorkerTrapped):
                    self._mark_failed(key, e.message)
                elif isinstance(e, WorkerFailed):
                    # A worker that dies or fails on every load counts like one that crashes
                    # while serving: past max_crashes it is not started again.
                    self._record_crash(key, f"load failed: {e.message}")
                raise
            worker.load_key = load_key
            worker.key, worker.mode = key, mode
            worker.pinned = key in self.pins
            worker.device, worker.vram_estimate = placement.device, placement.vram
            self.workers[key] = worker
            self.events.publish(events_pb2.EVENT_KIND_LOAD, f"loaded {key} in {worker.load_ns / 1e9:.2f}s",
                                subject=f"model:{key}", completed=1, total=1, unit="model",
                                pid=str(worker.pid), memory_bytes=str(worker.memory_bytes))
            self._set_expiry(worker, "")
            loop = asyncio.get_running_loop()
            if self._reaper is None or self._reaper.done():
                self._reaper = loop.create_task(self._reap_idle())
            if self._patrol is None or self._patrol.done():
                self._patrol = loop.create_task(self._health_patrol())
            return worker

    def _check_not_failed(self, key: WorkerKey, name: str) -> None:
        if key in self.failed:
            raise WorkerFailed(f"model '{name}' is marked failed and is not restarted: {self.failed[key]}; "
                               "restart the daemon to try again", model=name)

    async def _place(self, record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec,
                     need: int) -> DevicePlacement:
        """Choose the device (and GPU layers) for a load needing `need` bytes and write them into
        `spec`. A RunSpec's own gpu_layers wins over the computed split."""
        inv = await asyncio.to_thread(self.inventory)
        gpus = inv.gpus if inv.gpus and await asyncio.to_thread(self.gpu_capable, spec.runtime) else ()
        used: dict[int, int] = {}
        for w in self.workers.values():
            if w.alive and w.device.startswith("cuda:"):
                used[int(w.device[5:])] = used.get(int(w.device[5:]), 0) + w.vram_estimate
        requested = spec.resources.device if spec.resources.device not in ("", "cpu") else ""
        if requested and inv.gpus and not gpus:
            raise InvalidArgument(f"device {requested} was asked for, but the installed {spec.runtime} library "
                                  "has no GPU support (install a CUDA build of it)", param="device")
        placement = place_on_device(
            need, record.gguf.block_count, gpus, requested=requested,
            vram_budget=self.settings.vram_budget_mb << 20, reserve=self.settings.vram_reserve_mb << 20,
            used_by_us=used, allow_partial=bool(self.settings.partial_offload))
        spec.resources.device = placement.device
        if not spec.resources.HasField("gpu_layers"):
            spec.resources.gpu_layers = placement.gpu_layers
        return placement

    async def pin(self, name: str, run: run_spec_pb2.RunSpec) -> Worker:
        """Load `name` with the run's options and keep it loaded until unpinned."""
        worker = await self.worker_for(name, run=run)
        self.pins[worker.key] = run
        if not self._waiting.get(worker.key):
            self._slots.pop(worker.key, None)  # re-made at the run's width on the next request
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

    async def _make_room(self, key: WorkerKey, need: int) -> None:
        """Unload least recently used idle workers until one needing `need` bytes fits the memory
        budget and max_loaded_models; raises NeverFits or Unavailable (see placement.choose_evictions)."""
        loaded = [Resident(k, w.memory_bytes, w.in_flight, w.last_used, w.pinned)
                  for k, w in self.workers.items() if w.alive]
        for victim in choose_evictions(key, need, loaded, budget=self.ram_budget,
                                       max_loaded=max(1, self.settings.max_loaded_models)):
            log.info("unloading %s (least recently used) to load %s", victim, key)
            await self._unload(victim, reason=f"evicted to load {key}")

    def set_keep_alive(self, worker: Worker, keep_alive: str) -> None:
        """Apply a request's keep_alive (ollama syntax; empty: the default) to an idle worker.
        Raises PermissionDenied for a keep_alive that unloads from a caller who may not."""
        self._check_keep_alive(keep_alive)
        self._set_expiry(worker, keep_alive)

    def _check_keep_alive(self, keep_alive: str) -> None:
        """A keep_alive of 0 unloads the model: the same rule as every unload (see `unload`).
        A pinned model ignores keep_alive altogether (`_set_expiry`)."""
        if keep_alive and parse_keep_alive(keep_alive) == 0 and not access.caller_manages(self.settings.admin_token):
            raise PermissionDenied("keep_alive 0 unloads the model, which manages the daemon and needs the "
                                   "admin token (OMG_ADMIN_TOKEN); leave keep_alive out or give a duration")

    def _set_expiry(self, worker: Worker, keep_alive: str) -> None:
        if worker.pinned:
            worker.expires_at = None  # a run keeps its model until the run stops
            return
        seconds = parse_keep_alive(keep_alive) if keep_alive else self.default_keep_alive
        worker.expires_at = None if seconds is None else self.clock() + seconds

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
        # keep_alive: unload idle models whose time is up. A worker with requests in flight is
        # never unloaded; its expiry is set again when its last request ends.
        while self.workers:
            await self.reap_expired()
            await asyncio.sleep(0.25)

    async def reap_expired(self) -> list[str]:
        """Unload idle, unpinned workers whose keep_alive has run out; returns their labels."""
        now = self.clock()
        expired = [key for key, w in self.workers.items()
                   if w.in_flight == 0 and not w.pinned and w.expires_at is not None and now >= w.expires_at]
        for key in expired:
            await self._unload(key, reason="keep_alive expired")
        return [str(key) for key in expired]

    def _worker_died(self, name: WorkerKey, worker: Worker) -> None:
        """Count a dead worker's crash; one its library's trap killed marks the model failed at once."""
        hint = worker.trap_hint()
        if hint is not None:
            self._mark_failed(name, hint)
        else:
            self._record_crash(name, f"worker {worker.exit_description()}")

    def _request_killed(self, worker: Worker, fp: str) -> None:
        """A worker died serving one request alone: that request is quarantined, and the death
        is not counted toward max_crashes (one request, repeated, must not fail the model)."""
        what = worker.exit_description()
        self.quarantine.add(fp, model=worker.model, what=what)
        log.warning("worker for %s %s serving one request; that request is refused from now on",
                    worker.key, what)
        self.events.publish(events_pb2.EVENT_KIND_CRASH,
                            f"worker for {worker.key} {what} serving one request; the same request "
                            "is refused from now on", subject=f"model:{worker.key}",
                            level=events_pb2.LEVEL_ERROR)

    def _record_crash(self, name: WorkerKey, reason: str) -> None:
        """Count a crash (or failed load); past max_crashes within 10 minutes the model is marked failed."""
        now = time.monotonic()
        recent = [t for t in self._crashes.get(name, []) if now - t < 600] + [now]
        self._crashes[name] = recent
        self.events.publish(events_pb2.EVENT_KIND_CRASH, f"worker for {name}: {reason}", subject=f"model:{name}",
                            level=events_pb2.LEVEL_ERROR)
        if len(recent) >= max(1, self.settings.max_crashes):
            self._mark_failed(name, f"its worker crashed {len(recent)} times in 10 minutes (last: {reason})")

    def _mark_failed(self, name: WorkerKey, why: str) -> None:
        """Stop restarting model `name`'s worker; said once, in the log and as an alert event."""
        if name in self.failed:
            return
        self.failed[name] = why
        log.error("model %s marked failed: %s", name, why)
        self.events.publish(events_pb2.EVENT_KIND_ALERT, f"{name} marked failed: {why}",
                            subject=f"model:{name}", level=events_pb2.LEVEL_ERROR)

    async def _health_patrol(self) -> None:
        # A worker whose event loop does not answer Health twice in a row is hung (SIGSTOP,
        # a deadlock, swapping to death): kill its process tree; requests in flight then fail
        # and the next request starts a fresh worker.
        misses: dict[str, int] = {}  # worker id -> health checks missed in a row
        while self.workers:
            for name, w in list(self.workers.items()):
                if not w.alive or w.stub is None:
                    continue
                try:
                    await w.stub.Health(runtime_pb2.HealthRequest(), timeout=self.settings.health_timeout_s)
                    misses[w.id] = 0
                except grpc.aio.AioRpcError:
                    misses[w.id] = misses.get(w.id, 0) + 1
                    if misses[w.id] >= 2 and self.workers.get(name) is w:
                        log.error("worker %s for %s is hung (no health answer); killing it", w.id, name)
                        del self.workers[name]
                        self._record_crash(name, "hung: no health answer")
                        await w.stop(grace_s=0.5)
            await asyncio.sleep(self.settings.health_interval_s)

    @contextlib.asynccontextmanager
    async def _slot(self, name: WorkerKey) -> AsyncIterator[None]:
        """A serving slot of model `name`, after waiting in its bounded queue. A client that goes
        away while waiting is cancelled here and leaves the queue at once."""
        waiting = self._waiting.get(name, 0)
        limit = self.settings.max_queue
        if waiting >= limit or sum(self._waiting.values()) >= limit:
            self.events.publish(events_pb2.EVENT_KIND_ALERT, f"queue full for {name}; request refused",
                                subject=f"model:{name}", level=events_pb2.LEVEL_WARNING)
            raise ServerBusy("server busy, please try again.  maximum pending requests exceeded")
        # As many at once as the worker has slots: a pinned run's max_concurrency, else OMG_NUM_PARALLEL.
        pinned = self.pins.get(name)
        width = (pinned.resources.max_concurrency if pinned is not None else 0) or self.settings.num_parallel
        slots = self._slots.setdefault(name, asyncio.Semaphore(max(1, width)))
        queued = slots.locked()
        if queued:  # it will wait: the queue grows
            self.events.publish(events_pb2.EVENT_KIND_QUEUE, f"{name}: {waiting + 1} waiting",
                                subject=f"model:{name}", waiting=str(waiting + 1))
        self._waiting[name] = waiting + 1
        try:
            await slots.acquire()
        finally:
            self._waiting[name] -= 1
            if queued:  # it waited: the queue shrinks
                self.events.publish(events_pb2.EVENT_KIND_QUEUE, f"{name}: {self._waiting[name]} waiting",
                                    subject=f"model:{name}", waiting=str(self._waiting[name]))
        try:
            yield
        finally:
            slots.release()

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
        return self._waiting.get(key, 0)

    async def _stream(self, name: str, mode: int, call: Callable[[Worker], grpc.aio.Call],
                      keep_alive: str = "", record: assets_pb2.InstallRecord | None = None,
                      request: Message | None = None) -> AsyncIterator[M]:
        self._check_keep_alive(keep_alive)  # a bad or forbidden value fails before any work
        fp = fingerprint(request) if request is not None else None
        if fp is not None:
            self.quarantine.check(fp)  # a request that killed a worker is not queued again
        # The kind check comes before the queue: a wrong model is a 400 at once, not after a wait.
        if record is None:
            record = await asyncio.to_thread(self.store.get, name)
        mode = check_mode(record, mode)
        async with self._slot(worker_key(record, mode)):
            async for message in self._stream_in_slot(record, mode, call, keep_alive, fp):
                yield message

    async def _stream_in_slot(self, record: assets_pb2.InstallRecord, mode: int,
                              call: Callable[[Worker], grpc.aio.Call], keep_alive: str,
                              fp: str | None = None) -> AsyncIterator[M]:
        name = record.name
        worker = await self.worker_for(name, mode=mode, record=record)
        worker.in_flight += 1
        stream = call(worker)
        try:
            if isinstance(stream, grpc.aio.UnaryUnaryCall):
                yield await stream
            else:
                async for message in stream:
                    # Only a generation's last message has a finish reason (and usage and timings).
                    if getattr(message, "finish_reason", 0) and message.timings.eval_ns \
                            and message.usage.completion_tokens > 1:
                        worker.tokens_per_second = (message.usage.completion_tokens - 1) / (message.timings.eval_ns / 1e9)
                    yield message
        except grpc.aio.AioRpcError as e:
            raise await self._translate(worker, e, fp) from None
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
                self._set_expiry(worker, keep_alive)
            # "Last used" is a disk write: done after the answer, never on its critical path.
            asyncio.get_running_loop().run_in_executor(None, self.store.touch, name)

    async def _translate(self, worker: Worker, e: grpc.aio.AioRpcError, fp: str | None = None) -> OmgError:
        """Turn a worker's gRPC error into ours; a dead worker is dropped. A worker that died
        serving only this request (fingerprint `fp`) died of it: see daemon/quarantine.py."""
        code = e.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL):
            try:
                await asyncio.wait_for(worker.exited.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
            if not worker.alive:
                blamed = fp is not None and worker.in_flight == 1 and worker.trap_hint() is None
                if self.workers.get(worker.key) is worker:
                    del self.workers[worker.key]
                    if blamed:
                        self._request_killed(worker, fp or "")
                    else:
                        self._worker_died(worker.key, worker)
                await worker.stop()
                hint = worker.trap_hint()
                if hint is not None:
                    return WorkerFailed(hint, model=worker.model)
                return WorkerFailed(
                    f"the worker serving '{worker.model}' {worker.exit_description()} during the "
                    "request; the next request starts a new one"
                    + ("; this request will be refused if sent again" if blamed else ""),
                    model=worker.model)
        reason = dict(e.trailing_metadata() or ()).get("omg-error")
        if reason in BY_REASON:  # a specific error the worker named (context_length_exceeded)
            return BY_REASON[reason](e.details() or code.name)
        cls = BY_GRPC_CODE.get(code.name, WorkerFailed)
        if cls is WorkerFailed:
            return WorkerFailed(f"worker for '{worker.model}' failed: {e.details()}", model=worker.model)
        return cls(e.details() or code.name)

    def _check(self, params: run_spec_pb2.SamplingParams) -> None:
        if params.HasField("max_tokens") and not 0 <= params.max_tokens <= self.settings.max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens must be between 0 and {self.settings.max_tokens_limit}", param="max_tokens")
        if params.HasField("temperature") and not 0 <= params.temperature <= 100:
            raise InvalidArgument("temperature must be between 0 and 100", param="temperature")
        if params.HasField("top_k") and params.top_k < 0:
            raise InvalidArgument("top_k must not be negative", param="top_k")
        if len(params.stop) > 16:
            raise InvalidArgument("at most 16 stop sequences", param="stop")

    async def chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        """Stream a chat answer; raises InvalidArgument, ModelNotFound, WorkerFailed, ..."""
        if not request.messages:
            raise InvalidArgument("messages must not be empty", param="messages")
        self._check(request.params)
        async for message in self._stream(request.model, run_spec_pb2.MODE_CHAT,
                                          lambda w: w.stub.Chat(request), request.keep_alive,
                                          request=request):
            yield message

    async def complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        """Stream a raw completion; raises like chat."""
        self._check(request.params)
        async for message in self._stream(request.model, run_spec_pb2.MODE_COMPLETION,
                                          lambda w: w.stub.Complete(request), request.keep_alive,
                                          request=request):
            yield message

    async def embed(self, request: runtime_pb2.EmbedRequest) -> runtime_pb2.EmbedResponse:
        """Embed a batch of texts; raises InvalidArgument (empty input, a whisper model), ..."""
        if not request.inputs:
            raise InvalidArgument("input must not be empty", param="input")
        if any(not text for text in request.inputs):
            raise InvalidArgument("input must not contain empty strings", param="input")
        async for response in self._stream(request.model, run_spec_pb2.MODE_EMBEDDINGS,
                                           lambda w: w.stub.Embed(request), request.keep_alive,
                                           request=request):
            return response
        raise WorkerFailed(f"worker for '{request.model}' gave no embeddings", model=request.model)

    async def transcribe(self, request: runtime_pb2.TranscribeRequest, audio: Path,
                         ) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        """Stream the transcription of the audio file `audio` (a daemon-owned upload): its info,
        then segments. Raises InvalidArgument for audio that does not decode or is empty, or a
        model that is not a whisper model; the check runs before any model loads."""
        if request.HasField("temperature") and not 0 <= request.temperature <= 1:
            raise InvalidArgument("temperature must be between 0 and 1", param="temperature")
        if request.beam_size > 20:
            raise InvalidArgument("beam_size must be at most 20", param="beam_size")
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

    def whisper_model(self, name: str) -> str:
        """The model a transcription uses: `name`; for an empty name or OpenAI's "whisper-1"
        (unless a model has that name), OMG_WHISPER_MODEL or else the store's first whisper model."""
        if name and name != "whisper-1":
            return name
        records = self.store.list()
        if name and any(r.name == name for r in records):
            return name
        if self.settings.default_whisper_model:
            return self.settings.default_whisper_model
        whispers = [r.name for r in records if r.kind == assets_pb2.MODEL_KIND_WHISPER]
        if not whispers:
            raise InvalidArgument("no whisper model is installed; pull one (`omg pull Systran/faster-whisper-base`) "
                                  "or add a faster-whisper directory (`omg model add DIR`)", param="model")
        return whispers[0]

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

    async def shutdown(self) -> None:
        """Stop every worker."""
        for task in (self._reaper, self._patrol):
            if task is not None:
                task.cancel()
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
