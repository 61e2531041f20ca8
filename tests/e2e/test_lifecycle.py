"""keep_alive with ollama's meaning and a cap on loaded models, against real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("lifecycle"),
                   extra_env={"OMG_MAX_LOADED_MODELS": "1", "OMG_KEEP_ALIVE": "5m"}).start()
    for name in ("alpha", "beta"):
        assert d.omg("model", "add", str(gguf_path), "--name", name).returncode == 0
    yield d
    d.stop()


def _ps(d: DaemonProc) -> dict[str, dict]:
    # By store name: Ollama lists an untagged one as name:latest.
    return {m["name"].removesuffix(":latest"): m for m in httpx.get(d.http + "/api/ps").json()["models"]}


def _generate(d: DaemonProc, model: str, **kw: object) -> dict:
    r = httpx.post(d.http + "/api/generate", timeout=120,
                   json={"model": model, "prompt": "Say hi", "stream": False, "options": {"num_predict": 3}, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def _wait_unloaded(d: DaemonProc, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while name in _ps(d) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name not in _ps(d)


def test_max_loaded_models_evicts_least_recently_used(two_models: DaemonProc) -> None:
    d = two_models
    for _ in range(2):
        assert _generate(d, "alpha")["eval_count"] == 3
        assert set(_ps(d)) == {"alpha"}
        assert _generate(d, "beta")["eval_count"] == 3  # answers stay right across evictions
        assert set(_ps(d)) == {"beta"}


def test_default_keep_alive_sets_expiry(two_models: DaemonProc) -> None:
    d = two_models
    _generate(d, "alpha")
    expires = datetime.fromisoformat(_ps(d)["alpha"]["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(timezone.utc)).total_seconds()
    assert 240 < left <= 300
    assert "alpha" in d.omg("ps").stdout and "4m" in d.omg("ps").stdout


def test_keep_alive_zero_unloads_after_the_request(two_models: DaemonProc) -> None:
    d = two_models
    _generate(d, "alpha", keep_alive=0)
    _wait_unloaded(d, "alpha", 3)


def test_keep_alive_negative_keeps_forever_and_short_one_expires(two_models: DaemonProc) -> None:
    d = two_models
    _generate(d, "alpha", keep_alive=-1)
    assert _ps(d)["alpha"]["expires_at"].startswith("9999")
    assert "forever" in d.omg("ps").stdout
    _generate(d, "alpha", keep_alive="1s")
    _wait_unloaded(d, "alpha", 4)


def test_empty_prompt_loads_and_unloads(two_models: DaemonProc) -> None:
    d = two_models
    r = httpx.post(d.http + "/api/generate", json={"model": "beta", "keep_alive": "10m"}, timeout=60).json()
    assert r["done_reason"] == "load" and "beta" in _ps(d)
    r = httpx.post(d.http + "/api/chat", json={"model": "beta", "messages": [], "keep_alive": 0}, timeout=60).json()
    assert r["done_reason"] == "unload" and "beta" not in _ps(d)
    r = httpx.post(d.http + "/api/generate", json={"model": "ghost", "keep_alive": 0}, timeout=60)
    assert r.status_code == 404


def test_bad_keep_alive(two_models: DaemonProc) -> None:
    r = httpx.post(two_models.http + "/api/generate", json={"model": "alpha", "prompt": "x", "keep_alive": "soon"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


def test_ram_budget_holding_one_model(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_RAM_BUDGET_MB": "450", "OMG_MAX_LOADED_MODELS": "5"}).start()
    try:
        for name in ("one", "two"):
            assert d.omg("model", "add", str(gguf_path), "--name", name).returncode == 0
        for _ in range(2):
            for name in ("one", "two"):
                assert _generate(d, name)["eval_count"] == 3
                assert set(_ps(d)) == {name}  # the other was evicted to stay in budget
        info = d.omg("model", "info", "one").stdout
        assert "memory        ~" in info and "KV cache" in info
        # The event stream saw the evictions.
        evictions = []
        with httpx.stream("GET", d.http + "/v1/events", timeout=10) as r:
            for line in r.iter_lines():
                event = json.loads(line)["result"]
                if event["kind"] == "EVENT_KIND_UNLOAD" and "evicted to load" in event["message"]:
                    evictions.append(event)
                if len(evictions) >= 3:
                    break
        assert evictions[0]["subject"] == "model:one"
    finally:
        d.stop()


def test_model_that_can_never_fit(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_RAM_BUDGET_MB": "64"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "one").returncode == 0
        r = httpx.post(d.http + "/v1/chat/completions", json={"model": "one", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 507 and "budget is 64 MiB" in r.json()["error"]["message"]
        r = httpx.post(d.http + "/api/generate", json={"model": "one", "prompt": "x"})
        assert r.status_code == 507 and "OMG_RAM_BUDGET_MB" in r.json()["error"]
    finally:
        d.stop()


def test_bounded_queue_answers_busy_and_forgets_gone_clients(tmp_path: Path, gguf_path: Path) -> None:
    import threading

    d = new_daemon(tmp_path, extra_env={"OMG_MAX_QUEUE": "1"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        _generate(d, "m")  # loaded
        # A grammar that demands 250 numbers: a generation that cannot end early (a lower bound
        # over 256 is refused: llama.cpp's grammar compiler writes every repetition out).
        long_body = {"model": "m", "prompt": "Count.", "options": {"num_predict": 3000},
                     "format": {"type": "array", "minItems": 250, "items": {"type": "integer"}}}
        first = httpx.stream("POST", d.http + "/api/generate", json=long_body, timeout=120)
        r1 = first.__enter__()
        lines = r1.iter_lines()  # kept referenced: a dropped iterator closes the stream
        first_line = next(lines)  # generating: it holds the only slot
        assert "\"done\": false" in first_line, first_line
        # A second request waits in the queue (its client then goes away)...
        waiter_done = threading.Event()

        def waiter() -> None:
            try:
                httpx.post(d.http + "/api/generate", json={"model": "m", "prompt": "hi", "stream": False},
                           timeout=1.0)
            except httpx.TimeoutException:
                pass
            waiter_done.set()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.4)
        # ...so a third is refused at once, in each dialect's format.
        busy = httpx.post(d.http + "/api/generate", json={"model": "m", "prompt": "hi", "stream": False})
        assert busy.status_code == 503 and "server busy" in busy.json()["error"]
        assert busy.headers["retry-after"]
        busy = httpx.post(d.http + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert busy.status_code == 503 and busy.json()["error"]["type"] == "server_error"
        waiter_done.wait(5)
        t.join()
        time.sleep(0.3)
        # The waiter's client left: its place in the queue is free again.
        answers: list[int] = []
        queued = threading.Thread(target=lambda: answers.append(httpx.post(d.http + "/api/generate", timeout=120, json={
            "model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}).status_code))
        queued.start()
        time.sleep(0.4)
        first.__exit__(None, None, None)  # the long generation's client leaves: the slot frees
        queued.join(60)
        assert not queued.is_alive() and answers == [200]
        assert _generate(d, "m")["eval_count"] == 3
        # The event stream saw the queue grow and shrink, and the refusal.
        kinds = []
        with httpx.stream("GET", d.http + "/v1/events", timeout=10) as r:
            for line in r.iter_lines():
                event = json.loads(line)["result"]
                kinds.append((event["kind"], event.get("attributes", {}).get("waiting")))
                if sum(k == "EVENT_KIND_QUEUE" for k, _ in kinds) >= 3:
                    break
        assert ("EVENT_KIND_QUEUE", "1") in kinds and ("EVENT_KIND_QUEUE", "0") in kinds
    finally:
        d.stop()


def test_parallel_slots_serve_requests_at_once(tmp_path: Path, gguf_path: Path) -> None:
    import threading

    d = new_daemon(tmp_path, extra_env={"OMG_NUM_PARALLEL": "2"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        body = {"model": "m", "prompt": "Write a long story about a ship.", "stream": True,
                "options": {"num_predict": 40, "temperature": 0.7}}
        firsts: list[float] = []
        ends: list[float] = []

        def stream() -> None:
            with httpx.stream("POST", f"{d.http}/api/generate", json=body, timeout=120) as r:
                first = True
                for _line in r.iter_lines():
                    if first:
                        firsts.append(time.monotonic())
                        first = False
                ends.append(time.monotonic())

        assert httpx.post(f"{d.http}/api/generate", json={"model": "m"}, timeout=60).status_code == 200  # load
        threads = [threading.Thread(target=stream) for _ in range(3)]
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            loaded = httpx.get(f"{d.http}/v1/loaded").json().get("models", [])
            peak = max([peak] + [m.get("inFlight", 0) for m in loaded])
            time.sleep(0.02)
        assert peak == 2  # two slots at once, the third request queued
        firsts.sort()
        ends.sort()
        assert firsts[1] < ends[0]  # the second started before the first ended
        assert firsts[2] > ends[0] - 0.5  # the third waited for a slot
        info = json.loads(d.omg("ps", "--json").stdout)["models"][0]
        assert info["name"] == "m"
    finally:
        d.stop()
