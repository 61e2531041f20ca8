"""Worker health: crash accounting, the models marked failed, and the patrol that kills hung
workers.

A worker that dies is counted; past OMG_MAX_CRASHES within 10 minutes (or at once, when its
library's trap killed it) its model is marked failed and not started again until the daemon
restarts. A worker that died serving one request alone died of that request: the request is
quarantined instead (daemon/quarantine.py), so one request repeated cannot fail a model.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import MutableMapping

import grpc
from ohmygpu.core.errors import BY_GRPC_CODE, BY_REASON, OmgError, WorkerFailed
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.quarantine import RequestQuarantine
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.events.v1 import events_pb2
from ohmygpu.runtime.v1 import runtime_pb2

log = logging.getLogger("ohmygpu.orchestrator")

CRASH_WINDOW_S = 600  # crashes older than this are forgotten


class Health:
    """Crash counts and failed models by worker key, and the quarantine of requests that killed one."""

    def __init__(self, settings: Settings, events: EventBus) -> None:
        self.settings = settings
        self.events = events
        self._crashes: dict[WorkerKey, list[float]] = {}
        self.failed: dict[WorkerKey, str] = {}  # worker key -> why it is no longer restarted
        self.quarantine = RequestQuarantine()  # requests that killed a worker alone
        # What health reports read (GetHealth, /metrics): workers of a key that died, hung or
        # failed to load since the daemon started; the last such loss (monotonic time, why) of a
        # key not started again since; health checks each live worker (by id) missed in a row.
        self.deaths: collections.Counter[WorkerKey] = collections.Counter()
        self.down: dict[WorkerKey, tuple[float, str]] = {}
        self.misses: dict[str, int] = {}

    async def worker_error(self, workers: MutableMapping[WorkerKey, Worker], worker: Worker,
                           e: grpc.aio.AioRpcError, fp: str | None = None) -> OmgError:
        """Turn a worker's gRPC error into ours; a dead worker is dropped from `workers` and its
        death counted. A worker that died serving only this request (fingerprint `fp`) died of
        it: see daemon/quarantine.py."""
        code = e.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL):
            try:
                await asyncio.wait_for(worker.exited.wait(), 2.0)
            except TimeoutError:
                pass
            if not worker.alive:
                blamed = fp is not None and worker.in_flight == 1 and worker.trap_hint() is None and not worker.lost
                if workers.get(worker.key) is worker:
                    del workers[worker.key]
                    if blamed:
                        self.request_killed(worker, fp or "")
                    elif not worker.lost:
                        self.worker_died(worker.key, worker)
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

    def check_not_failed(self, key: WorkerKey, name: str) -> None:
        """Raise WorkerFailed for a model marked failed."""
        if key in self.failed:
            raise WorkerFailed(f"model '{name}' is marked failed and is not restarted: {self.failed[key]}; "
                               "restart the daemon to try again", model=name)

    def worker_died(self, name: WorkerKey, worker: Worker) -> None:
        """Count a dead worker's crash; one its library's trap killed marks the model failed at once."""
        hint = worker.trap_hint()
        if hint is not None:
            self._lost(name, hint)
            self.mark_failed(name, hint)
        else:
            self.record_crash(name, f"worker {worker.exit_description()}")

    def request_killed(self, worker: Worker, fp: str) -> None:
        """A worker died serving one request alone: that request is quarantined, and the death
        is not counted toward max_crashes (one request, repeated, must not fail the model)."""
        what = worker.exit_description()
        self._lost(worker.key, f"worker {what} serving one request")  # type: ignore[arg-type]  # the pool's key
        self.quarantine.add(fp, model=worker.model, what=what)
        log.warning("worker for %s %s serving one request; that request is refused from now on",
                    worker.key, what)
        self.events.publish(events_pb2.EVENT_KIND_CRASH,
                            f"worker for {worker.key} {what} serving one request; the same request "
                            "is refused from now on", subject=f"model:{worker.key}",
                            level=events_pb2.LEVEL_ERROR)

    def record_crash(self, name: WorkerKey, reason: str) -> None:
        """Count a crash (or failed load); past max_crashes within 10 minutes the model is marked failed."""
        now = time.monotonic()
        self._lost(name, reason)
        recent = [t for t in self._crashes.get(name, []) if now - t < CRASH_WINDOW_S] + [now]
        self._crashes[name] = recent
        self.events.publish(events_pb2.EVENT_KIND_CRASH, f"worker for {name}: {reason}", subject=f"model:{name}",
                            level=events_pb2.LEVEL_ERROR)
        if len(recent) >= max(1, self.settings.max_crashes):
            self.mark_failed(name, f"its worker crashed {len(recent)} times in 10 minutes (last: {reason})")

    def _lost(self, name: WorkerKey, why: str) -> None:
        self.deaths[name] += 1
        self.down[name] = (time.monotonic(), why)

    def started(self, name: WorkerKey) -> None:
        """A worker for `name` loaded: it is no longer down."""
        self.down.pop(name, None)

    def recently_down(self, name: WorkerKey) -> str | None:
        """Why `name`'s last worker was lost, when that was within the crash window and none
        has loaded since; else None."""
        when, why = self.down.get(name, (0.0, ""))
        return why if why and time.monotonic() - when < CRASH_WINDOW_S else None

    def mark_failed(self, name: WorkerKey, why: str) -> None:
        """Stop restarting model `name`'s worker; said once, in the log and as an alert event."""
        if name in self.failed:
            return
        self.failed[name] = why
        log.error("model %s marked failed: %s", name, why)
        self.events.publish(events_pb2.EVENT_KIND_ALERT, f"{name} marked failed: {why}",
                            subject=f"model:{name}", level=events_pb2.LEVEL_ERROR)

    async def patrol(self, workers: MutableMapping[WorkerKey, Worker]) -> None:
        """Runs while `workers` has any. A worker whose event loop does not answer Health twice
        in a row is hung (SIGSTOP, a deadlock, swapping to death): kill its process tree;
        requests in flight then fail and the next request starts a fresh worker."""
        misses = self.misses  # worker id -> health checks missed in a row
        misses.clear()
        while workers:
            for gone in misses.keys() - {w.id for w in workers.values()}:
                del misses[gone]
            for name, w in list(workers.items()):
                if not w.alive or w.stub is None:
                    continue
                try:
                    await w.stub.Health(runtime_pb2.HealthRequest(), timeout=self.settings.health_timeout_s)
                    misses[w.id] = 0
                except grpc.aio.AioRpcError:
                    misses[w.id] = misses.get(w.id, 0) + 1
                    if misses[w.id] >= 2 and workers.get(name) is w:
                        log.error("worker %s for %s is hung (no health answer); killing it", w.id, name)
                        del workers[name]
                        self.record_crash(name, "hung: no health answer")
                        await w.stop(grace_s=0.5)
            await asyncio.sleep(self.settings.health_interval_s)
