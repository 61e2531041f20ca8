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


def test_a_client_that_drops_an_event_stream_does_not_kill_the_daemon(tmp_path: Path) -> None:
    """The client of an event stream closes it; the daemon's next writes to it meet a dead
    socket. That is EPIPE for that stream, not SIGPIPE for the daemon (started here as
    `python -m ohmygpu.cli.main serve`, whose entry restores SIGPIPE's default for the CLI)."""
    import socket

    d = new_daemon(tmp_path, extra_env={"HF_ENDPOINT": "http://127.0.0.1:9"}).start()  # nothing listens on 9
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
            s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            httpx.post(f"{d.http}/v1/models/install", json={"source": "org/none"}, timeout=30)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")  # the head comes with the first event
            s.close()  # as a client that stops reading does: the daemon's next write is answered by a reset
            for _ in range(4):  # failed pulls: events the dead stream's writer must send
                httpx.post(f"{d.http}/v1/models/install", json={"source": "org/none"}, timeout=30)
                time.sleep(0.2)
        assert d.proc.poll() is None, f"the daemon died: {d.proc.returncode}"
        assert httpx.get(d.http + "/livez", timeout=10).status_code == 200
        # Whatever the timing of a write after the close, it cannot be fatal: SIGPIPE is
        # ignored by the daemon (CI lost one to it, exit status -13, after a test's `break`).
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        assert ignored & (1 << (signal.SIGPIPE - 1)), "the daemon does not ignore SIGPIPE"
    finally:
        d.stop()
