"""The daemon's Prometheus metrics (`GET /metrics`): every metric name is defined here.

One private CollectorRegistry per daemon (never prometheus_client's global one: two daemons in
one process, as tests make, must not share or collide). Three sources feed it:

- the HTTP edge (gateway/http_metrics.py) observes each request: `observe_http`;
- every chat and completion stream passes `Orchestrator._stream_in_slot`, whatever its dialect
  or edge (OpenAI, Ollama, gRPC): a `GenerationMeter` there sees the first message (time to
  first token) and the last one (usage, timings);
- the rest is read from live state when scraped (`render`): the workers, queues, crash counts,
  devices, pulls and event subscribers the daemon tracks already, so nothing has to be kept in
  step with them.

Label values are bounded: routes are templates, models are installed names, devices and nodes
are the machine's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ohmygpu.core.version import __version__
from ohmygpu.run.v1 import run_spec_pb2
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from ohmygpu.daemon.events import EventBus
    from ohmygpu.daemon.jobs import JobManager
    from ohmygpu.daemon.orchestrator import Orchestrator
    from ohmygpu.daemon.readiness import Readiness

# Requests range from a listing (ms) to a long generation or stream (minutes).
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# First tokens include the queue and, for a model not loaded, its load.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
_GENERATING = (run_spec_pb2.MODE_CHAT, run_spec_pb2.MODE_COMPLETION)


def mode_label(mode: int) -> str:
    """"chat" for MODE_CHAT, "embeddings" for MODE_EMBEDDINGS, ..."""
    return run_spec_pb2.Mode.Name(mode).removeprefix("MODE_").lower() if mode else "unspecified"


class GenerationMeter:
    """One chat or completion stream: time to first token at its first message, tokens and time
    per output token at its last (the one with a finish reason)."""

    __slots__ = ("_metrics", "_model", "_started", "_first")

    def __init__(self, metrics: Metrics, model: str, started: float) -> None:
        self._metrics, self._model, self._started = metrics, model, started
        self._first = 0.0

    def message(self, message: Any) -> None:
        now = time.monotonic()
        m = self._metrics
        if not self._first:
            self._first = now
            m.ttft.labels(self._model).observe(now - self._started)
        if not getattr(message, "finish_reason", 0):
            return
        usage, timings = message.usage, message.timings
        m.prompt_tokens.labels(self._model).inc(usage.prompt_tokens)
        m.completion_tokens.labels(self._model).inc(usage.completion_tokens)
        if usage.completion_tokens > 1:  # the first token's time is the TTFT's
            spent = timings.eval_ns / 1e9 if timings.eval_ns else now - self._first
            m.tpot.labels(self._model).observe(spent / (usage.completion_tokens - 1))


class _NoMeter:
    __slots__ = ()

    def message(self, message: Any) -> None:
        pass


_NO_METER = _NoMeter()


class _Live:
    """A collector yielding the live families `Metrics.render` gathered (in the event loop,
    where the state they read is changed) just before rendering."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class Metrics:
    """The registry of one daemon, the metrics observed as things happen, and the live ones."""

    content_type = CONTENT_TYPE_LATEST  # of what `render` returns

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        Info("ohmygpu", "The daemon's version.", registry=r).info({"version": __version__})
        ProcessCollector(namespace="ohmygpu", registry=r)  # the daemon's own CPU, memory, files
        self.http_requests = Counter(
            "ohmygpu_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=r)
        self.http_duration = Histogram(
            "ohmygpu_http_request_duration_seconds",
            "Seconds from an HTTP request's arrival to the end of its answer (a stream's last byte).",
            ["route", "method"], buckets=_HTTP_BUCKETS, registry=r)
        self.prompt_tokens = Counter("ohmygpu_prompt_tokens", "Prompt tokens of finished generations.",
                                     ["model"], registry=r)
        self.completion_tokens = Counter("ohmygpu_completion_tokens", "Tokens generated by finished generations.",
                                         ["model"], registry=r)
        self.ttft = Histogram(
            "ohmygpu_time_to_first_token_seconds",
            "Seconds from a chat or completion request's admission (queue and load included) to its first message.",
            ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram(
            "ohmygpu_time_per_output_token_seconds",
            "A generation's seconds per output token after the first (one observation per request).",
            ["model"], buckets=_TPOT_BUCKETS, registry=r)
        self._live = _Live()
        r.register(self._live)  # type: ignore[arg-type]  # a collector by shape
        self._orchestrator: Orchestrator | None = None
        self._jobs: JobManager | None = None
        self._events: EventBus | None = None
        self._readiness: Readiness | None = None

    def watch(self, orchestrator: Orchestrator, *, jobs: JobManager | None = None,
              events: EventBus | None = None, readiness: Readiness | None = None) -> None:
        """Report the live state of these parts of the daemon at each scrape."""
        self._orchestrator, self._jobs, self._events, self._readiness = orchestrator, jobs, events, readiness

    # Observed as it happens

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def meter(self, model: str, mode: int, started: float) -> GenerationMeter | _NoMeter:
        """The meter of one stream of `model` in `mode` admitted at `started` (time.monotonic());
        one that records nothing for modes that do not generate tokens."""
        return GenerationMeter(self, model, started) if mode in _GENERATING else _NO_METER

    # Read when scraped

    async def render(self) -> bytes:
        """The text exposition of every metric, live state read now."""
        families = await self._live_families()
        # No await between setting the families and rendering them: a concurrent scrape cannot
        # swap its own in between.
        self._live.families = families
        return generate_latest(self.registry)

    async def _live_families(self) -> list[Metric]:
        out: list[Metric] = []
        if self._readiness is not None:
            out.append(GaugeMetricFamily("ohmygpu_ready", "1 when the daemon has finished starting (/readyz).",
                                                  value=1 if self._readiness.state().ready else 0))
        if self._events is not None:
            out.append(GaugeMetricFamily("ohmygpu_event_subscribers", "Open event streams.",
                                                  value=self._events.subscriber_count))
        if self._jobs is not None:
            out.append(CounterMetricFamily(
                "ohmygpu_pull_bytes", "Bytes downloaded by pulls (and copied to nodes by pulls with a node).",
                value=self._jobs.downloaded_bytes))
        o = self._orchestrator
        if o is not None:
            out += self._workers(o)
            out += await self._devices(o)
        return out

    @staticmethod
    def _workers(o: Orchestrator) -> list[Metric]:
        workers = [w for w in list(o.workers.values()) if w.alive]
        count = GaugeMetricFamily("ohmygpu_models_loaded", "Workers running (a model may have a chat and an embeddings worker).",
                                  value=len(workers))
        loaded = GaugeMetricFamily("ohmygpu_model_loaded", "1 for each loaded model, by mode and node.",
                                   labels=["model", "mode", "node"])
        memory = GaugeMetricFamily(
            "ohmygpu_model_memory_bytes",
            "A loaded model's memory: its worker's RAM measured at load; on a GPU, the VRAM placement reserved for it.",
            labels=["model", "mode", "node", "device", "kind"])
        in_flight: Tally[str] = Tally()
        for w in workers:
            mode, node = mode_label(w.mode), o.node_name(w.node)
            loaded.add_metric([w.model, mode, node], 1)
            memory.add_metric([w.model, mode, node, "cpu", "ram"], w.memory_bytes)
            if w.device != "cpu":
                memory.add_metric([w.model, mode, node, w.device, "vram"], w.vram_estimate)
            in_flight[w.model] += w.in_flight
        busy = GaugeMetricFamily("ohmygpu_requests_in_flight", "Requests a model's workers are serving.",
                                 labels=["model"])
        for model, n in sorted(in_flight.items()):
            busy.add_metric([model], n)
        depth: Tally[str] = Tally()
        for key, n in o.queues.depths().items():
            depth[key.model] += n
        queue = GaugeMetricFamily("ohmygpu_queue_depth", "Requests waiting for a slot of a model's workers.",
                                  labels=["model"])
        for model, n in sorted(depth.items()):
            queue.add_metric([model], n)
        deaths: Tally[str] = Tally()
        for key, n in o.health.deaths.items():
            deaths[key.model] += n
        restarts = CounterMetricFamily(
            "ohmygpu_worker_restarts",
            "Workers of a model that crashed, hung or failed to load (each replaced by the next request, "
            "unless the model is marked failed).", labels=["model"])
        for model, n in sorted(deaths.items()):
            restarts.add_metric([model], n)
        failed = GaugeMetricFamily("ohmygpu_models_failed", "Models marked failed (not started again).",
                                   value=len(o.health.failed))
        return [count, loaded, memory, busy, queue, restarts, failed]

    @staticmethod
    async def _devices(o: Orchestrator) -> list[Metric]:
        up = GaugeMetricFamily("ohmygpu_node_up", "1 for a node that is up, 0 for one that is down.", labels=["node"])
        memory = GaugeMetricFamily("ohmygpu_device_memory_bytes",
                                   "Memory of each node's devices: RAM of the machine, VRAM of each GPU.",
                                   labels=["node", "device", "kind", "state"])
        for node in list(o.nodes):
            up.add_metric([node.name], 1 if node.up else 0)
            if not node.up:
                continue
            inv = await asyncio.to_thread(node.inventory)  # psutil and NVML calls: off the loop
            memory.add_metric([node.name, "cpu", "ram", "total"], inv.ram_total)
            memory.add_metric([node.name, "cpu", "ram", "used"], max(0, inv.ram_total - inv.ram_available))
            for g in inv.gpus:
                memory.add_metric([node.name, f"cuda:{g.index}", "vram", "total"], g.total)
                memory.add_metric([node.name, f"cuda:{g.index}", "vram", "used"], g.used)
        return [up, memory]
