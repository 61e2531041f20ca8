"""Runs: a RunSpec pins a model with its load options, survives a daemon restart, has logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProc, new_daemon, worker_pid

pytestmark = pytest.mark.slow


def _ps(d: DaemonProc) -> dict[str, dict]:
    # By store name: Ollama lists an untagged one as name:latest.
    return {m["name"].removesuffix(":latest"): m for m in httpx.get(d.http + "/api/ps").json()["models"]}


def test_runs_pin_reload_restart_logs(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_MAX_LOADED_MODELS": "1", "OMG_KEEP_ALIVE": "1s"}).start()
    try:
        for name in ("a", "b"):
            assert d.omg("model", "add", str(gguf_path), "--name", name).returncode == 0
        r = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "a"}, "resources": {"contextLength": 512}},
                       timeout=60)
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["state"] == "RUN_STATE_RUNNING" and run["model"] == "a" and int(run["pid"]) > 0
        assert _ps(d)["a"]["context_length"] == 512
        assert _ps(d)["a"]["expires_at"].startswith("9999")  # pinned: no keep_alive expiry
        time.sleep(1.5)
        assert "a" in _ps(d)
        # A pinned model is never evicted: with one slot, another model must wait.
        busy = httpx.post(d.http + "/api/generate", json={"model": "b", "prompt": "hi", "stream": False}, timeout=60)
        assert busy.status_code == 503 and "pinned" in busy.json()["error"]
        # Requests use the pinned worker; a second run on the same model is refused.
        ok = httpx.post(d.http + "/api/generate", json={"model": "a", "prompt": "hi", "stream": False,
                                                      "options": {"num_predict": 2}}, timeout=60)
        assert ok.status_code == 200 and ok.json()["eval_count"] == 2
        again = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "a"}}, timeout=60)
        assert again.status_code == 400 and "already pinned" in again.json()["message"]
        listed = json.loads(d.omg("run", "ls", "--json").stdout)["runs"]
        assert listed[0]["id"] == run["id"]
        logs = httpx.get(f"{d.http}/v1/runs/{run['id']}/logs").text
        assert "loaded a" in logs
        assert "loaded a" in d.omg("run", "logs", run["id"]).stdout
        # The run survives a daemon restart: its model is loaded again with its options.
        d.stop()
        d.start()
        deadline = time.monotonic() + 30
        while "a" not in _ps(d) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ps(d)["a"]["context_length"] == 512
        assert httpx.get(f"{d.http}/v1/runs/{run['id']}").json()["state"] == "RUN_STATE_RUNNING"
        # Stopping unpins and unloads.
        stopped = d.omg("run", "stop", run["id"])
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert "a" not in _ps(d)
        assert httpx.get(f"{d.http}/v1/runs/{run['id']}").json()["state"] == "RUN_STATE_STOPPED"
        # The CLI can start one too, with load options; an unknown model fails clearly.
        started = d.omg("run", "b", "--ctx", "1024")
        assert started.returncode == 0 and "pinned" in started.stdout
        assert _ps(d)["b"]["context_length"] == 1024
        missing = d.omg("run", "ghost")
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        d.stop()


def test_reload_only_when_load_options_change(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "a").returncode == 0
        httpx.post(d.http + "/api/generate", json={"model": "a", "prompt": "hi", "stream": False,
                                                  "options": {"num_predict": 1}}, timeout=60)
        pid = int(_ps_pid(d))
        run = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "a"}}, timeout=60).json()
        assert int(run["pid"]) == pid  # same options as loaded: no reload
        httpx.post(f"{d.http}/v1/runs/{run['id']}/stop", json={}, timeout=60)
        httpx.post(d.http + "/api/generate", json={"model": "a", "prompt": "", "stream": False}, timeout=60)
        pid = int(_ps_pid(d))
        run = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "a"}, "resources": {"contextLength": 256}},
                         timeout=60).json()
        assert int(run["pid"]) != pid  # new context length: reloaded
    finally:
        d.stop()


def _ps_pid(d: DaemonProc) -> str:
    return str(worker_pid(d, "a"))


def test_a_runs_sampling_defaults_apply_and_impossible_runs_are_refused(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        for bad, param in (({"runtime": "exllama"}, "runtime"),
                           ({"revision": {"commit": "b" * 40}}, "revision"),
                           ({"network": {"bind": "0.0.0.0", "port": 9000}}, "network")):
            r = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "m"}, **bad}, timeout=60)
            assert r.status_code == 400 and param in r.json()["message"], r.text  # grpc-gateway shape
        assert httpx.get(d.http + "/v1/runs").json().get("runs", []) == []  # nothing recorded
        r = httpx.post(d.http + "/v1/runs", timeout=60, json={
            "model": {"repo": "m"}, "runtime": "llamacpp", "params": {"maxTokens": 3}})
        assert r.status_code == 200, r.text

        def chat(**extra: object) -> dict:
            return httpx.post(d.http + "/v1/chat/completions", timeout=60, json={
                "model": "m", "messages": [{"role": "user", "content": "Tell me a long story about a ship."}],
                **extra}).json()

        short = chat()  # no max_tokens: the run's default of 3
        assert short["usage"]["completion_tokens"] == 3 and short["choices"][0]["finish_reason"] == "length"
        longer = chat(max_tokens=6)  # the request's own value wins
        assert longer["usage"]["completion_tokens"] == 6
    finally:
        d.stop()
