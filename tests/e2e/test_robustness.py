"""Bad input, worker crashes and the HTTP security layer, against a real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import DaemonProc, free_port, new_daemon, worker_pid

pytestmark = pytest.mark.slow


def _alive(daemon: DaemonProc) -> None:
    r = httpx.post(daemon.http + "/v1/chat/completions", json={
        "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"", 400, "empty"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "'model' must be a string"),
    (b'{"model": "smollm2", "messages": "hello"}', 400, "'messages' must be an array"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": 7}]}', 400, "content"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', 400, "max_tokens"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999999999}', 400, "max_tokens"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, "temperature"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "n": 9}', 400, "'n'"),
    (b'{"model": "../../etc/passwd", "messages": [{"role": "user", "content": "x"}]}', 400, "invalid model name"),
    (b'{"model": "ghost", "messages": [{"role": "user", "content": "x"}]}', 404, "not found"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}', 400, "response_format"),
])
def test_openai_bad_input(daemon: DaemonProc, body: bytes, status: int, needle: str) -> None:
    r = httpx.post(daemon.http + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] and "Traceback" not in r.text
    assert str(daemon.home) not in r.text  # no local paths in errors


def test_body_over_limit_is_413_in_each_dialect(daemon: DaemonProc) -> None:
    big = b'{"model": "smollm2", "prompt": "' + b"a" * (33 << 20) + b'"}'
    r = httpx.post(daemon.http + "/v1/completions", content=big, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = httpx.post(daemon.http + "/api/generate", content=big, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming the body in
        for _ in range(40):
            yield b"a" * (1 << 20)

    r = httpx.post(daemon.http + "/v1/completions", content=chunks(), timeout=60)
    assert r.status_code == 413
    _alive(daemon)


def test_unknown_route_and_method(daemon: DaemonProc) -> None:
    r = httpx.get(daemon.http + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(daemon.http + "/api/chat")
    assert r.status_code == 405 and isinstance(r.json()["error"], str)


def test_dns_rebinding_host_header_refused(daemon: DaemonProc) -> None:
    for host in ("evil.example.com", "evil.example.com:11434", ""):
        r = httpx.get(daemon.http + "/api/tags", headers={"Host": host})
        assert r.status_code == 403, host
    assert httpx.get(daemon.http + "/api/tags", headers={"Host": "localhost"}).status_code == 200
    assert httpx.get(daemon.http + "/api/tags", headers={"Host": f"127.0.0.1:{daemon.http_port}"}).status_code == 200


def test_no_cors_by_default(daemon: DaemonProc) -> None:
    r = httpx.options(daemon.http + "/v1/models", headers={"Origin": "http://evil.example",
                                                           "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_management_api_from_http_rules(daemon: DaemonProc, gguf_path: Path) -> None:
    r = httpx.get(daemon.http + "/v1/store/models")
    assert r.status_code == 200 and any(m["name"] == "smollm2" for m in r.json()["models"])
    r = httpx.get(daemon.http + "/v1/store/models/smollm2")
    assert r.json()["gguf"]["quantization"] == "Q4_1"
    r = httpx.get(daemon.http + "/v1/store/models", params={"pageSize": 1})
    assert len(r.json()["models"]) == 1
    r = httpx.post(daemon.http + "/v1/store/models", json={"path": str(gguf_path), "name": "via-http"})
    assert r.status_code == 200 and r.json()["name"] == "via-http"
    r = httpx.delete(daemon.http + "/v1/store/models/via-http")
    assert r.status_code == 200
    r = httpx.get(daemon.http + "/v1/store/models/via-http")
    assert r.status_code == 404 and r.json()["code"] == 5 and "not found" in r.json()["message"]
    r = httpx.post(daemon.http + "/v1/store/models", json={"path": 12})
    assert r.status_code == 400 and r.json()["code"] == 3
    assert httpx.get(daemon.http + "/v1/version").json()["version"]
    lines = httpx.post(daemon.http + "/v1/omg/chat", json={
        "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "params": {"maxTokens": 3}}).text.splitlines()
    assert len(lines) >= 2 and '"result"' in lines[0] and "COMPLETION" not in lines[-1]
    assert '"finishReason": "FINISH_REASON_LENGTH"' in lines[-1]


def test_worker_killed_mid_stream(daemon: DaemonProc) -> None:
    client = openai.OpenAI(base_url=daemon.http + "/v1", api_key="x", max_retries=0)
    _alive(daemon)
    pid = worker_pid(daemon, "smollm2")
    stream = client.chat.completions.create(model="smollm2", stream=True, max_tokens=1500, temperature=0,
                                            messages=[{"role": "user", "content": "Write a very long story."}])
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                os.kill(pid, signal.SIGKILL)
    assert "worker" in str(e.value.message) and len(got) >= 3
    # The next request starts a new worker and succeeds.
    _alive(daemon)
    new_pid = worker_pid(daemon, "smollm2")
    assert new_pid != pid


def test_client_disconnect_frees_the_worker(daemon: DaemonProc) -> None:
    _alive(daemon)
    with httpx.stream("POST", daemon.http + "/api/generate", timeout=60, json={
            "model": "smollm2", "prompt": "Write a very long story.", "options": {"num_predict": 2000}}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 2:
                break
    started = time.monotonic()
    _alive(daemon)  # the single slot is free again long before 2000 tokens are done
    assert time.monotonic() - started < 10


def _in_flight(daemon: DaemonProc) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(daemon.http + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ohmygpu_requests_in_flight" and s.labels.get("model") == "smollm2")


def test_a_non_streamed_request_whose_client_leaves_stops_at_once(daemon: DaemonProc) -> None:
    """Neither uvicorn nor Starlette cancels a handler whose client went away; a non-streamed
    answer never reads the connection again, so without gateway/disconnect.py the model would
    generate all of it for nobody."""
    _alive(daemon)
    # A grammar that demands 250 numbers: an answer that cannot end within the client's 2 s.
    body = {"model": "smollm2", "prompt": "Count.", "stream": False, "options": {"num_predict": 3000},
            "format": {"type": "array", "minItems": 250, "items": {"type": "integer"}}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(daemon.http + "/api/generate", json=body, timeout=2.0)
    deadline = time.monotonic() + 3
    while _in_flight(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _in_flight(daemon) == 0  # the worker's request ended with its client
    _alive(daemon)


def test_concurrent_clients_all_answered(daemon: DaemonProc) -> None:
    results: list[int] = []

    def ask() -> None:
        r = httpx.post(daemon.http + "/v1/chat/completions", timeout=120, json={
            "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        results.append(r.status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4


def test_non_loopback_bind_requires_token(tmp_path: Path) -> None:
    env = dict(os.environ, OMG_HOME=str(tmp_path), OMG_HTTP_ADDR=f"0.0.0.0:{free_port()}",
               OMG_GRPC_ADDR=f"127.0.0.1:{free_port()}")
    env.pop("OMG_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "serve"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "OMG_TOKEN" in r.stderr


def test_token_required_when_set(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, token="s3cret-token").start()
    try:
        assert httpx.get(d.http + "/v1/models").status_code == 401
        assert httpx.get(d.http + "/api/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(d.http + "/v1/models", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert d.omg("model", "list").returncode == 0  # the CLI sends OMG_TOKEN
        env = {k: v for k, v in d.env.items() if k != "OMG_TOKEN"}
        r = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "model", "list"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 4 and "OMG_TOKEN" in r.stderr  # exit 4: a token is wanted
    finally:
        d.stop()


def test_daemon_runs_without_the_llamacpp_extra(tmp_path: Path, gguf_path: Path) -> None:
    # Hide llama_cpp from every process of this daemon, as if the extra were not installed.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'llama_cpp' or name.startswith('llama_cpp.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n")
    d = new_daemon(tmp_path, extra_env={"PYTHONPATH": str(blocker)}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smol").returncode == 0
        assert httpx.get(d.http + "/api/tags").json()["models"][0]["name"] == "smol:latest"
        r = httpx.post(d.http + "/v1/chat/completions", json={
            "model": "smol", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 501
        assert "pip install 'ohmygpu[llamacpp]'" in r.json()["error"]["message"]
        r = httpx.post(d.http + "/api/chat", json={"model": "smol", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 501 and "ohmygpu[llamacpp]" in r.json()["error"]
    finally:
        d.stop()


def _worker_pid(d: DaemonProc, model: str) -> int:
    return worker_pid(d, model)


def test_hung_worker_is_killed_and_replaced(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_HEALTH_INTERVAL": "0.5", "OMG_HEALTH_TIMEOUT": "2"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        client = openai.OpenAI(base_url=d.http + "/v1", api_key="x", max_retries=0, timeout=60)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        pid = _worker_pid(d, "m")
        stream = client.chat.completions.create(model="m", stream=True, max_tokens=1500,
                                                messages=[{"role": "user", "content": "Write a very long story."}])
        started = time.monotonic()
        with pytest.raises(openai.APIError) as e:
            for i, _ in enumerate(stream):
                if i == 2:
                    os.kill(pid, signal.SIGSTOP)  # hung: alive, but answers nothing
        assert "worker" in str(e.value.message), e.value.message
        assert time.monotonic() - started < 30
        with pytest.raises(ProcessLookupError):  # killed, not left stopped
            for _ in range(100):
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split()[2] == "Z":
                        raise ProcessLookupError
                time.sleep(0.1)
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert r.usage.completion_tokens == 2 and _worker_pid(d, "m") != pid
    finally:
        d.stop()


def test_model_crashing_repeatedly_is_marked_failed(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_MAX_CRASHES": "2"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(d.http + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        os.kill(_worker_pid(d, "m"), signal.SIGKILL)
        time.sleep(0.5)
        assert httpx.post(d.http + "/v1/chat/completions", json=body, timeout=60).status_code == 200  # restarted
        os.kill(_worker_pid(d, "m"), signal.SIGKILL)
        time.sleep(0.5)
        r = httpx.post(d.http + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 500 and "marked failed" in r.json()["error"]["message"]
        assert "crashed 2 times" in r.json()["error"]["message"]
        # Other requests and the daemon itself carry on.
        assert httpx.get(d.http + "/api/tags").status_code == 200
    finally:
        d.stop()


def test_no_orphan_worker_survives_its_daemon(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
    assert httpx.post(d.http + "/api/generate", json={"model": "m", "prompt": "hi", "stream": False,
                                                      "options": {"num_predict": 1}}, timeout=60).status_code == 200
    pid = _worker_pid(d, "m")
    d.proc.send_signal(signal.SIGKILL)  # the daemon dies without any chance to clean up
    d.proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the worker outlived its daemon")
    # A new daemon on the same home starts cleanly (the lock died with the old one).
    d.start()
    d.stop()
