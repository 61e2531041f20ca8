"""The pure pieces of operations: readiness, route labels for metrics, the metrics middleware
(it passes a stream through as it comes), the generation meter, the health report's states,
the WebSocket's token and Origin rules, and query strings with repeated fields."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ohmygpu.api.v1 import events_pb2, system_pb2
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.health import Health
from ohmygpu.daemon.health_report import health_report
from ohmygpu.daemon.metrics import Metrics
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.readiness import LISTENERS, RUNS, STORE, Readiness
from ohmygpu.gateway.http_metrics import HttpMetricsMiddleware, method_label, route_label
from ohmygpu.gateway.management import query_fields
from ohmygpu.gateway.operations import subprotocol_token
from ohmygpu.gateway.origin import OriginGuard
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.routing import Route

S = system_pb2.WorkerHealthState


def _settings(tmp_path: Any, **env: str) -> Settings:
    return Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_CONFIG": str(tmp_path / "none.toml"), **env})


def test_readiness_follows_the_start_and_the_stop() -> None:
    r = Readiness()
    assert r.state().ready is False and r.state().reason == "opening the store"
    r.done(STORE)
    r.done(LISTENERS)
    assert r.state().reason == "restoring the runs pinned before the restart"
    r.done(RUNS)
    assert r.state().ready and r.state().reason == ""
    r.fail(RUNS, "see the log")
    assert not r.state().ready and r.state().reason == "runs failed: see the log"
    r.done(RUNS)  # done again after a failure
    assert r.state().ready
    r.stopping()
    assert (r.state().ready, r.state().reason) == (False, "shutting down")


async def _endpoint(request: Any) -> Response:
    return Response("x")


ROUTES = [Route("/v1/store/models/{name:path}", _endpoint, methods=["GET"]),
          Route("/api/chat", _endpoint, methods=["POST"])]


def _scope(path: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"type": "http", "path": path, "root_path": "", "method": method, "headers": [], **extra}


def test_routes_are_labelled_by_template_and_unmatched_as_other() -> None:
    assert route_label(_scope("/v1/store/models/org/some-model"), ROUTES) == "/v1/store/models/{name:path}"
    assert route_label(_scope("/api/chat", "POST"), ROUTES) == "/api/chat"
    assert route_label(_scope("/api/chat", "GET"), ROUTES) == "/api/chat"  # a 405 keeps its route
    assert route_label(_scope("/v1/secret-token-in-a-path"), ROUTES) == "other"
    # The route the router matched, when it ran (Starlette sets scope["route"]).
    assert route_label(_scope("/anything", route=ROUTES[1]), ROUTES) == "/api/chat"
    assert method_label("POST") == "POST" and method_label("BREW") == "other"


def test_the_middleware_passes_a_stream_through_and_observes_once() -> None:
    seen: list[tuple[str, str, int]] = []
    metrics = SimpleNamespace(observe_http=lambda route, method, status, s: seen.append((route, method, status)))
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
            assert len(sent) == 2 + i  # each chunk went out before the next is made: nothing buffered
            assert not seen  # and the request is not over yet
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(HttpMetricsMiddleware(app, metrics, ROUTES)(_scope("/api/chat", "POST"), receive, send))
    assert seen == [("/api/chat", "POST", 200)] and len(sent) == 5

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None  # the client went away before any answer

    seen.clear()
    asyncio.run(HttpMetricsMiddleware(silent, metrics, ROUTES)(_scope("/nope"), receive, send))
    assert seen == [("other", "GET", 499)]


def test_the_generation_meter_counts_tokens_and_times() -> None:
    m = Metrics()
    meter = m.meter("m", run_spec_pb2.MODE_CHAT, started=0.0)
    meter.message(runtime_pb2.ChatResponse(content="Hel"))
    meter.message(runtime_pb2.ChatResponse(content="lo"))
    last = runtime_pb2.ChatResponse(finish_reason=runtime_pb2.FINISH_REASON_STOP)
    last.usage.prompt_tokens, last.usage.completion_tokens = 7, 5
    last.timings.eval_ns = 400_000_000
    meter.message(last)

    def sample(name: str) -> float | None:
        return m.registry.get_sample_value(name, {"model": "m"})

    assert sample("ohmygpu_prompt_tokens_total") == 7 and sample("ohmygpu_completion_tokens_total") == 5
    assert sample("ohmygpu_time_to_first_token_seconds_count") == 1
    assert sample("ohmygpu_time_per_output_token_seconds_sum") == 0.1  # 0.4 s over the 4 tokens after the first
    # Embeddings generate no tokens: nothing is recorded for them.
    m.meter("e", run_spec_pb2.MODE_EMBEDDINGS, started=0.0).message(runtime_pb2.EmbedResponse())
    assert m.registry.get_sample_value("ohmygpu_time_to_first_token_seconds_count", {"model": "e"}) is None


def _worker(key: WorkerKey, *, pid: int, alive: bool = True) -> Any:
    return SimpleNamespace(key=key, model=key.model, mode=key.mode, node=0, pid=pid, alive=alive, in_flight=1,
                           device="cpu", id=f"w{pid}", exit_description=lambda: "was killed by SIGKILL")


def test_the_health_report_names_each_workers_state(tmp_path: Any) -> None:
    health = Health(_settings(tmp_path), EventBus())
    ready, hung, dead = (WorkerKey(n, run_spec_pb2.MODE_CHAT) for n in ("ready", "hung", "dead"))
    loading, again, failed = (WorkerKey(n, run_spec_pb2.MODE_CHAT) for n in ("loading", "again", "failed"))
    workers = {ready: _worker(ready, pid=11), hung: _worker(hung, pid=12), dead: _worker(dead, pid=13, alive=False)}
    health.misses["w12"] = 1
    health.record_crash(again, "worker exited with status 1")
    health.mark_failed(failed, "it crashed 3 times")
    node = SimpleNamespace(index=0, name="local", up=True, down_reason="")
    orchestrator = SimpleNamespace(workers=workers, nodes=[node], health=health, loading=lambda: [loading, again],
                                   queued=lambda key: 2 if key == loading else 0, node_name=lambda i: "local")
    readiness = Readiness()
    for step in (STORE, LISTENERS, RUNS):
        readiness.done(step)
    report = health_report(orchestrator, readiness, started_at=100.0, now=160.0)  # type: ignore[arg-type]
    states = {w.model: w for w in report.workers}
    assert states["ready"].state == S.WORKER_HEALTH_STATE_READY and states["ready"].pid == 11
    assert states["hung"].state == S.WORKER_HEALTH_STATE_UNHEALTHY and "health check" in states["hung"].reason
    assert states["dead"].state == S.WORKER_HEALTH_STATE_UNHEALTHY and "SIGKILL" in states["dead"].reason
    assert states["loading"].state == S.WORKER_HEALTH_STATE_LOADING and states["loading"].queued == 2
    assert states["again"].state == S.WORKER_HEALTH_STATE_RESTARTING and states["again"].restarts == 1
    assert states["failed"].state == S.WORKER_HEALTH_STATE_FAILED
    assert report.uptime_seconds == 60 and report.ready and report.status == "degraded"
    assert [(n.name, n.state, n.workers) for n in report.nodes] == [("local", "up", 2)]
    # A lost worker not started again since is reported for the crash window...
    orchestrator.loading = lambda: [loading]
    orchestrator.workers = {ready: workers[ready]}
    health.failed.clear()
    report = health_report(orchestrator, readiness, started_at=100.0)  # type: ignore[arg-type]
    assert [w.state for w in report.workers if w.model == "again"] == [S.WORKER_HEALTH_STATE_UNHEALTHY]
    # ...until one loads. Only ready workers and first loads: ok.
    health.started(again)
    assert health_report(orchestrator, readiness, started_at=100.0).status == "ok"  # type: ignore[arg-type]


def test_websocket_token_from_the_bearer_subprotocol() -> None:
    assert subprotocol_token(["bearer", "s3cret"]) == "s3cret"
    assert subprotocol_token(["bearer, s3cret"]) == "s3cret"  # one header, not split by the server
    assert subprotocol_token(["chat", "bearer"]) is None and subprotocol_token([]) is None


def test_websocket_upgrades_are_held_to_the_cross_site_rule(tmp_path: Any) -> None:
    guard = OriginGuard(_settings(tmp_path, OMG_CORS_ORIGINS="https://ok.example"))
    host = [(b"host", b"127.0.0.1:11434")]
    assert guard.websocket_refusal("ws", host) is None  # not a browser
    assert guard.websocket_refusal("ws", host + [(b"origin", b"http://127.0.0.1:11434")]) is None  # our own page
    assert guard.websocket_refusal("ws", host + [(b"origin", b"https://ok.example")]) is None
    assert guard.websocket_refusal("ws", host + [(b"origin", b"http://evil.example")]) is not None
    assert guard.websocket_refusal("ws", host + [(b"sec-fetch-site", b"cross-site")]) is not None
    # A GET is a plain read for HTTP, but a WebSocket upgrade is not.
    assert guard.refusal("GET", "http", host + [(b"origin", b"http://evil.example")]) is None


def test_query_strings_fill_repeated_fields() -> None:
    params = QueryParams("afterId=5&kinds=EVENT_KIND_LOAD&kinds=EVENT_KIND_UNLOAD")
    fields = query_fields(events_pb2.StreamEventsRequest.DESCRIPTOR, params)
    assert fields == {"afterId": "5", "kinds": ["EVENT_KIND_LOAD", "EVENT_KIND_UNLOAD"]}
