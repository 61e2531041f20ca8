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
