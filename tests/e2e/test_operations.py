"""Operations: the health check, the probes, Prometheus metrics and the event stream as a
WebSocket, against a real daemon serving SmolLM2; who may reach them with tokens set."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ohmygpu.api.v1 import system_pb2, system_pb2_grpc
from tests.helpers import DaemonProc, new_daemon, worker_pid

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "hi"}]


def scrape(d: DaemonProc, headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of /metrics as (name, labels, value)."""
    r = httpx.get(d.http + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(r.text)
            for s in family.samples]


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def openai_chat(d: DaemonProc, **extra: object) -> dict:
    r = httpx.post(d.http + "/v1/chat/completions", timeout=120,
                   json={"model": "smollm2", "max_tokens": 4, "messages": HI, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def subscribers(d: DaemonProc) -> float:
    return value(scrape(d), "ohmygpu_event_subscribers")


def wait_for(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_health_lists_the_loaded_worker_and_probes_answer(daemon: DaemonProc) -> None:
    openai_chat(daemon)
    r = httpx.get(daemon.http + "/v1/health", timeout=10)
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ok" and health["ready"] is True and health["version"]
    assert float(health["uptimeSeconds"]) > 0
    assert health["nodes"][0]["name"] == "local" and health["nodes"][0]["state"] == "up"
    # The shared daemon may also hold an embeddings worker of smollm2, from an earlier test.
    chat = [w for w in health["workers"] if w["model"] == "smollm2" and w["mode"] == "MODE_CHAT"]
    assert len(chat) == 1, health["workers"]
    worker = chat[0]
    assert worker["node"] == "local" and worker["device"] == "cpu"
    assert worker["state"] == "WORKER_HEALTH_STATE_READY"
    assert worker["pid"] == worker_pid(daemon, "smollm2", "MODE_CHAT")
    # The same answer over gRPC (the route is GetHealth's http rule).
    with grpc.insecure_channel(daemon.grpc_addr) as channel:
        got = system_pb2_grpc.SystemServiceStub(channel).GetHealth(system_pb2.GetHealthRequest(), timeout=10)
    assert any(w.model == "smollm2" and w.pid == worker["pid"] for w in got.workers)
    live = httpx.get(daemon.http + "/livez", timeout=10)
    assert (live.status_code, live.text) == (200, "ok")
    ready = httpx.get(daemon.http + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_metrics_count_requests_tokens_and_devices(daemon: DaemonProc) -> None:
    openai_chat(daemon)  # loaded: the load is not part of what is measured below
    before = scrape(daemon)
    usage = openai_chat(daemon)["usage"]
    r = httpx.post(daemon.http + "/api/chat", timeout=120, json={
        "model": "smollm2", "messages": HI, "stream": False, "options": {"num_predict": 3}})
    assert r.status_code == 200, r.text
    ollama = r.json()
    assert httpx.get(daemon.http + "/v1/no-such-route-5731", timeout=10).status_code == 404
    after = scrape(daemon)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ohmygpu_http_requests_total", route="/v1/chat/completions", method="POST", status="200") == 1
    assert grew("ohmygpu_http_requests_total", route="/api/chat", method="POST", status="200") == 1
    assert grew("ohmygpu_http_request_duration_seconds_count", route="/api/chat", method="POST") == 1
    # Tokens: what the two APIs said they used, counted where every stream passes.
    assert grew("ohmygpu_prompt_tokens_total", model="smollm2") == usage["prompt_tokens"] + ollama["prompt_eval_count"]
    assert grew("ohmygpu_completion_tokens_total", model="smollm2") == usage["completion_tokens"] + ollama["eval_count"]
    assert grew("ohmygpu_time_to_first_token_seconds_count", model="smollm2") == 2
    assert grew("ohmygpu_time_per_output_token_seconds_count", model="smollm2") == 2
    # A route that does not exist is "other", never its raw path (bounded cardinality).
    assert grew("ohmygpu_http_requests_total", route="other", status="404") == 1
    assert not any("no-such-route" in v for _, labels, _ in after for v in labels.values())
    # Live state at scrape time.
    assert value(after, "ohmygpu_models_loaded") >= 1
    assert value(after, "ohmygpu_model_loaded", model="smollm2", mode="chat", node="local") == 1
    assert value(after, "ohmygpu_model_memory_bytes", model="smollm2", kind="ram") > 0
    assert value(after, "ohmygpu_queue_depth", model="smollm2") == 0
    assert value(after, "ohmygpu_device_memory_bytes", node="local", device="cpu", kind="ram", state="total") > 0
    assert value(after, "ohmygpu_device_memory_bytes", node="local", device="cpu", kind="ram", state="used") > 0
    assert value(after, "ohmygpu_ready") == 1 and value(after, "ohmygpu_node_up", node="local") == 1
    assert any(n == "ohmygpu_info" and labels.get("version") for n, labels, _ in after)
    assert any(n == "ohmygpu_pull_bytes_total" for n, _, _ in after)


def test_events_over_a_websocket(daemon: DaemonProc) -> None:
    ws_url = f"ws://127.0.0.1:{daemon.http_port}/v1/events"
    # Only the chat worker loaded: an earlier test of the shared daemon may have left an
    # embeddings worker of smollm2, whose own UNLOAD event would come first.
    assert httpx.post(daemon.http + "/v1/loaded/smollm2:unload", json={}, timeout=30).status_code == 200
    openai_chat(daemon)
    base = subscribers(daemon)
    with connect(ws_url, open_timeout=10) as everything:
        last = 0  # the recent history first: its last id
        while True:
            try:
                last = int(json.loads(everything.recv(timeout=0.5))["id"])
            except TimeoutError:
                break
        # The same request fields as the HTTP stream, from the query string (kinds repeated).
        with connect(f"{ws_url}?afterId={last}&kinds=EVENT_KIND_UNLOAD", open_timeout=10) as unloads:
            sse: list[dict] = []

            def listen() -> None:
                with httpx.stream("GET", daemon.http + "/v1/events", params={"afterId": last}, timeout=30,
                                  headers={"Accept": "text/event-stream"}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            sse.append(json.loads(line[6:]))
                            return

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            assert wait_for(lambda: subscribers(daemon) == base + 3)
            r = httpx.post(daemon.http + "/v1/loaded/smollm2:unload", json={}, timeout=30)
            assert r.status_code == 200 and r.json()["unloaded"] is True
            event = json.loads(everything.recv(timeout=10))
            assert event["kind"] == "EVENT_KIND_UNLOAD" and event["subject"] == "model:smollm2"
            assert int(event["id"]) > last and event["level"] == "LEVEL_INFO" and event["time"]
            assert json.loads(unloads.recv(timeout=10)) == event
            listener.join(10)
            assert sse == [event]  # the same JSON as the server-sent events' data
            openai_chat(daemon)  # loads again: LOAD events, which the filtered socket does not get
            kinds = set()
            while "EVENT_KIND_LOAD" not in kinds:
                kinds.add(json.loads(everything.recv(timeout=30))["kind"])
            # The filtered socket got no LOAD: only unloads (other models of a shared daemon may
            # be unloaded meanwhile: evicted for this load, or their keep-alive ran out).
            with pytest.raises(TimeoutError):
                while True:
                    assert json.loads(unloads.recv(timeout=0.5))["kind"] == "EVENT_KIND_UNLOAD"
    # Clients gone: their subscriptions are too.
    assert wait_for(lambda: subscribers(daemon) == base), subscribers(daemon)


def test_readyz_waits_for_the_runs_a_restart_restores(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "pinned").returncode == 0
        r = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "pinned"}}, timeout=120)
        assert r.status_code == 200, r.text
    finally:
        d.stop()
    d.start()  # the run is restored (its model loaded again) in the background
    try:
        first = httpx.get(d.http + "/readyz", timeout=10)
        assert first.status_code == 503, first.text
        assert first.json()["ready"] is False and first.json()["reason"] in (
            "starting the listeners", "restoring the runs pinned before the restart")
        assert httpx.get(d.http + "/livez", timeout=10).status_code == 200  # alive all the while
        assert wait_for(lambda: httpx.get(d.http + "/readyz", timeout=10).status_code == 200, timeout=60)
        health = httpx.get(d.http + "/v1/health", timeout=10).json()
        assert [w["state"] for w in health["workers"] if w["model"] == "pinned"] == ["WORKER_HEALTH_STATE_READY"]
    finally:
        d.stop()


def raw_upgrade(port: int, host: str, extra: str = "") -> bytes:
    """The daemon's answer to a WebSocket handshake sent as written (a Host of our choosing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        return s.recv(4096)


def test_who_may_reach_operations(tmp_path: Path) -> None:
    d = new_daemon(tmp_path, token="user-token", extra_env={"OMG_ADMIN_TOKEN": "admin-token"}).start()
    user, admin = {"Authorization": "Bearer user-token"}, {"Authorization": "Bearer admin-token"}
    try:
        # Metrics are management: the admin token, not the user's.
        assert httpx.get(d.http + "/metrics").status_code == 401
        assert httpx.get(d.http + "/metrics", headers=user).status_code == 403
        assert value(scrape(d, admin), "ohmygpu_ready") == 1
        # Probes carry no token; the health check is inference's.
        assert httpx.get(d.http + "/livez").status_code == 200
        assert httpx.get(d.http + "/readyz").status_code == 200
        assert httpx.get(d.http + "/v1/health").status_code == 401
        assert httpx.get(d.http + "/v1/health", headers=user).json()["ready"] is True
        assert httpx.get(d.http + "/livez", headers={"Host": "evil.example"}).status_code == 403
        # The event WebSocket: refused without the token or with a wrong one.
        url = f"ws://127.0.0.1:{d.http_port}/v1/events"
        for kw in ({}, {"additional_headers": {"Authorization": "Bearer nope"}}, {"subprotocols": ["bearer", "nope"]}):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, open_timeout=10, **kw)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 401
            assert "OMG_TOKEN" in json.loads(refused.value.response.body)["message"]
        # The token in the header (programs) or as the subprotocol after "bearer" (browsers).
        with connect(url, open_timeout=10, additional_headers=user) as ws:
            assert ws.subprotocol is None
        with connect(url, open_timeout=10, subprotocols=["bearer", "user-token"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "bearer"
        # A page on another site cannot open it, even with the token (cross-site WebSocket hijacking);
        # the daemon's own pages can.
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10, additional_headers=user, origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        with connect(url, open_timeout=10, additional_headers=user, origin=f"http://127.0.0.1:{d.http_port}"):  # type: ignore[arg-type]
            pass
        # DNS rebinding: a Host that does not name this machine.
        answer = raw_upgrade(d.http_port, "evil.example", "Authorization: Bearer user-token\r\n")
        assert answer.startswith(b"HTTP/1.1 403") and b"OMG_ALLOWED_HOSTS" in answer
        assert raw_upgrade(d.http_port, f"127.0.0.1:{d.http_port}",
                           "Authorization: Bearer user-token\r\n").startswith(b"HTTP/1.1 101")
    finally:
        d.stop()
