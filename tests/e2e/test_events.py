"""The event stream observes what the daemon does: loads, unloads, crashes, pulls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import new_daemon, worker_pid

pytestmark = pytest.mark.slow


def test_events_over_sse_grpc_and_cli(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        seen: list[dict] = []
        stop = threading.Event()

        def listen() -> None:
            try:
                with httpx.stream("GET", d.http + "/v1/events", headers={"Accept": "text/event-stream"},
                                  timeout=60) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            seen.append(json.loads(line[6:]))
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                pass  # the daemon stopping ends the stream

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        cli = subprocess.Popen([sys.executable, "-m", "ohmygpu.cli.main", "events", "--json"], env=d.env,
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        body = {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}, "keep_alive": 0}
        assert httpx.post(d.http + "/api/generate", json=body, timeout=60).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["kind"] == "EVENT_KIND_UNLOAD" for e in seen):
            time.sleep(0.1)
        kinds = [e["kind"] for e in seen]
        assert kinds.index("EVENT_KIND_LOAD") < kinds.index("EVENT_KIND_UNLOAD")
        loaded = [e for e in seen if e["kind"] == "EVENT_KIND_LOAD" and e["message"].startswith("loaded")]
        assert loaded and loaded[0]["subject"] == "model:m" and int(loaded[0]["attributes"]["pid"]) > 0
        unload = next(e for e in seen if e["kind"] == "EVENT_KIND_UNLOAD")
        assert "keep_alive" in unload["message"]
        # A crash is observed too.
        assert httpx.post(d.http + "/api/generate", json={**body, "keep_alive": "5m"}, timeout=60).status_code == 200
        pid = worker_pid(d, "m")
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        httpx.post(d.http + "/api/generate", json=body, timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["kind"] == "EVENT_KIND_CRASH" for e in seen):
            time.sleep(0.1)
        assert any(e["kind"] == "EVENT_KIND_CRASH" and e["level"] == "LEVEL_ERROR" for e in seen)
        ids = [int(e["id"]) for e in seen]
        assert ids == sorted(ids)
        cli.terminate()
        out = cli.communicate(timeout=10)[0]
        cli_kinds = {json.loads(line)["kind"] for line in out.splitlines() if line.strip()}
        assert {"EVENT_KIND_LOAD", "EVENT_KIND_UNLOAD", "EVENT_KIND_CRASH"} <= cli_kinds
        stop.set()
        # NDJSON when the client does not ask for SSE; history replays with after_id.
        with httpx.stream("GET", d.http + "/v1/events", params={"afterId": 1}, timeout=10) as r:
            first = json.loads(next(r.iter_lines()))["result"]
        assert int(first["id"]) == 2
    finally:
        d.stop()
