"""Management restricted separately from inference: OMG_TOKEN for inference, OMG_ADMIN_TOKEN for
pulls, deletes, runs, unloads and shutdown, over HTTP (every dialect) and gRPC; MCP tools limited
with OMG_MCP_TOOLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import new_daemon

pytestmark = pytest.mark.slow
USER = {"Authorization": "Bearer user-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


def test_admin_token_guards_management(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, token="user-token", extra_env={"OMG_ADMIN_TOKEN": "admin-token"}).start()
    try:
        url = d.http
        # Inference and listings: the user token works, the admin token too, none is refused.
        assert httpx.get(f"{url}/api/tags", headers=USER).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers=ADMIN).status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401
        # Management with the user token: 403 in each dialect's own format.
        r = httpx.post(f"{url}/api/pull", json={"model": "org/x"}, headers=USER)
        assert r.status_code == 403 and "OMG_ADMIN_TOKEN" in r.json()["error"]
        r = httpx.request("DELETE", f"{url}/api/delete", json={"model": "x"}, headers=USER)
        assert r.status_code == 403
        # Making models is management too: create, and the blobs it is made from (even asking
        # whether one was uploaded).
        blob = f"{url}/api/blobs/sha256:{'0' * 64}"
        assert httpx.post(f"{url}/api/create", json={"model": "x", "from": "m"}, headers=USER).status_code == 403
        assert httpx.post(blob, content=b"x", headers=USER).status_code == 403
        assert httpx.head(blob, headers=USER).status_code == 403
        assert httpx.head(blob, headers=ADMIN).status_code == 404
        r = httpx.post(f"{url}/v1/store/models:create", json={"name": "x"}, headers=USER)
        assert r.status_code == 403
        r = httpx.post(f"{url}/v1/models/install", json={"source": "org/x"}, headers=USER)
        assert r.status_code == 403 and r.json()["code"] == 7  # grpc-gateway style PERMISSION_DENIED
        r = httpx.post(f"{url}/v1/store:gc", json={}, headers=USER)
        assert r.status_code == 403
        r = httpx.post(f"{url}/v1/shutdown", json={}, headers=USER)
        assert r.status_code == 403
        assert httpx.post(f"{url}/v1/store:gc", json={"dryRun": True}).status_code == 401
        # ... and with the admin token they go through (here to the daemon's own answer).
        assert httpx.post(f"{url}/v1/store:gc", json={"dryRun": True}, headers=ADMIN).status_code == 200
        assert httpx.request("DELETE", f"{url}/api/delete", json={"model": "x"}, headers=ADMIN).status_code == 404
        # gRPC: the CLI with the user token lists, but cannot add or remove; the admin token can.
        user_env = {**d.env, "OMG_TOKEN": "user-token"}
        admin_env = {**d.env, "OMG_TOKEN": "admin-token"}

        def omg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", *args], env=env,
                                  capture_output=True, text=True, timeout=60)

        assert omg(user_env, "model", "list").returncode == 0
        r = omg(user_env, "model", "add", str(gguf_path), "--name", "m")
        assert r.returncode == 4 and "OMG_ADMIN_TOKEN" in r.stderr
        assert omg(admin_env, "model", "add", str(gguf_path), "--name", "m").returncode == 0
        chat = httpx.post(f"{url}/v1/chat/completions", headers=USER, timeout=60, json={
            "model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        r = omg(user_env, "model", "rm", "m")
        assert r.returncode == 4
        r = httpx.post(f"{url}/v1/loaded/m:unload", json={}, headers=USER)
        assert r.status_code == 403
        assert httpx.post(f"{url}/v1/loaded/m:unload", json={}, headers=ADMIN).json()["unloaded"] is True
        assert omg(admin_env, "model", "rm", "m").returncode == 0
    finally:
        d.stop()


def test_mcp_tools_can_be_limited(daemon, tmp_path: Path) -> None:
    import anyio

    from tests.e2e.test_mcp import _session

    env = {**daemon.env, "OMG_MCP_TOOLS": "chat,list_models"}
    tools, (pull,) = anyio.run(_session, env, [("pull_model", {"source": "org/x"})])
    assert {t.name for t in tools.tools} == {"chat", "list_models"}
    assert pull.is_error  # not offered
    r = daemon.omg("mcp", "--tools", "chat,bogus", timeout=30)
    assert r.returncode == 1 and "bogus" in r.stderr


def test_omg_config_masks_every_secret(tmp_path: Path) -> None:
    secrets = {"OMG_TOKEN": "user-secret-1", "OMG_ADMIN_TOKEN": "admin-secret-2", "HF_TOKEN": "hf_secret_3"}
    env = {**os.environ, "OMG_HOME": str(tmp_path / "home"), **secrets}
    for args in (["config"], ["config", "--json"]):
        r = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", *args], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        for value in secrets.values():
            assert value not in r.stdout
    rows = {row["env"]: row for row in json.loads(r.stdout)}
    for name in secrets:
        assert rows[name]["value"] == "***" and rows[name]["source"] == f"env {name}"
    assert rows["OMG_HOME"]["value"] == str(tmp_path / "home")  # the rest is shown as it is


def _admin_omg(d, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", *args], env={**d.env, "OMG_TOKEN": "admin-token"},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path):
    """A daemon with an inference token and an admin token, and two models."""
    d = new_daemon(tmp_path_factory.mktemp("guarded"), token="user-token",
                   extra_env={"OMG_ADMIN_TOKEN": "admin-token"}).start()
    for name in ("pinned", "free"):
        assert _admin_omg(d, "model", "add", str(gguf_path), "--name", name).returncode == 0
    yield d
    d.stop()


def _loaded(d) -> set[str]:
    return {m["name"].removesuffix(":latest") for m in httpx.get(d.http + "/api/ps", headers=USER).json()["models"]}


def test_one_unload_rule_on_every_path(guarded) -> None:
    import grpc

    from ohmygpu.runtime.v1 import runtime_pb2
    from ohmygpu.api.v1 import chat_pb2_grpc

    d = guarded
    run = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "pinned"}}, headers=ADMIN, timeout=120)
    assert run.status_code == 200, run.text
    try:
        hi = [{"role": "user", "content": "hi"}]
        # keep_alive 0 on a request never unloads a pinned model, whoever asks.
        for path, body in (("/api/chat", {"messages": hi}), ("/api/generate", {"prompt": "hi"})):
            r = httpx.post(d.http + path, headers=ADMIN, timeout=120, json={
                "model": "pinned", "stream": False, "keep_alive": 0, "options": {"num_predict": 2}, **body})
            assert r.status_code == 200, r.text
            assert "pinned" in _loaded(d)
        # The empty-prompt unload form is refused as the admin API refuses it: stop the run instead.
        for path, body in (("/api/chat", {"messages": []}), ("/api/generate", {"prompt": ""})):
            r = httpx.post(d.http + path, headers=ADMIN, timeout=60, json={"model": "pinned", "keep_alive": 0, **body})
            assert r.status_code == 409 and "stop the run instead" in r.json()["error"], r.text
        r = httpx.post(d.http + "/v1/loaded/pinned:unload", json={}, headers=ADMIN)
        assert r.status_code == 409 and "stop the run instead" in r.json()["message"]
        r = httpx.request("DELETE", d.http + "/api/delete", json={"model": "pinned"}, headers=ADMIN)
        assert r.status_code == 409 and "stop the run instead" in r.json()["error"]
        assert "pinned" in _loaded(d)
        # With an admin token set, an inference token cannot unload by keep_alive either.
        r = httpx.post(d.http + "/api/generate", headers=USER, timeout=120, json={
            "model": "free", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        assert r.status_code == 200 and "free" in _loaded(d)
        for path, body in (("/api/chat", {"messages": []}), ("/api/generate", {"prompt": ""}),
                           ("/api/chat", {"messages": hi}), ("/api/generate", {"prompt": "hi"})):
            r = httpx.post(d.http + path, headers=USER, timeout=60, json={
                "model": "free", "keep_alive": 0, "stream": False, **body})
            assert r.status_code == 403 and "OMG_ADMIN_TOKEN" in r.json()["error"], (path, body, r.text)
        stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(d.grpc_addr))
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Chat(runtime_pb2.ChatRequest(model="free", keep_alive="0", messages=[
                runtime_pb2.ChatMessage(role="user", content="hi")]), metadata=[("authorization", "Bearer user-token")]))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "free" in _loaded(d)
        # The admin may, on a model no run pins.
        r = httpx.post(d.http + "/api/generate", headers=ADMIN, json={"model": "free", "prompt": "", "keep_alive": 0})
        assert r.status_code == 200 and r.json()["done_reason"] == "unload"
        assert "free" not in _loaded(d)
    finally:
        assert httpx.post(f"{d.http}/v1/runs/{run.json()['id']}/stop", json={}, headers=ADMIN).status_code == 200
    assert "pinned" not in _loaded(d)


def test_verify_is_admin_and_does_not_starve_listings(guarded, gguf_path: Path) -> None:
    import concurrent.futures
    import time

    d = guarded
    r = httpx.post(d.http + "/v1/store/models:verify", json={}, headers=USER)
    assert r.status_code == 403
    assert _admin_omg(d, "model", "verify").returncode == 0
    for i in range(4):  # more bytes to hash per verify
        _admin_omg(d, "model", "add", str(gguf_path), "--name", f"copy{i}")
    try:
        def verify() -> int:
            return httpx.post(d.http + "/v1/store/models:verify", json={}, headers=ADMIN, timeout=300).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            verifies = [pool.submit(verify) for _ in range(8)]
            time.sleep(0.3)
            slowest = 0.0
            while not all(f.done() for f in verifies):
                started = time.monotonic()
                assert httpx.get(d.http + "/api/tags", headers=USER, timeout=60).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.05)
            codes = [f.result() for f in verifies]
        assert slowest < 1.0, slowest
        assert codes.count(200) >= 1 and set(codes) <= {200, 503}  # one at a time, a bounded queue behind
    finally:
        for i in range(4):
            _admin_omg(d, "model", "rm", f"copy{i}")


def test_inference_clients_see_no_local_paths(guarded, gguf_path: Path) -> None:
    import grpc

    from ohmygpu.api.v1 import models_pb2, models_pb2_grpc

    d = guarded
    secret_paths = [str(gguf_path.parent), str(d.home)]
    for url in ("/v1/status", "/v1/store/models", "/v1/store/models/free"):
        seen = httpx.get(d.http + url, headers=USER).text
        assert not any(p in seen for p in secret_paths), (url, seen[:500])
        assert any(p in httpx.get(d.http + url, headers=ADMIN).text for p in secret_paths), url  # admins see them
    listed = httpx.get(d.http + "/v1/store/models", headers=USER).json()["models"]
    assert {m["ref"]["repo"] for m in listed} == {gguf_path.name}  # a local source: its file name only
    stub = models_pb2_grpc.ModelServiceStub(grpc.insecure_channel(d.grpc_addr))
    record = stub.GetModel(models_pb2.GetModelRequest(name="free"), metadata=[("authorization", "Bearer user-token")])
    assert record.artifacts and not any(a.local_path for a in record.artifacts)
    record = stub.GetModel(models_pb2.GetModelRequest(name="free"), metadata=[("authorization", "Bearer admin-token")])
    assert record.artifacts[0].local_path == str(gguf_path)
