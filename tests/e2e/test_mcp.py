"""`omg mcp` driven by the MCP SDK's own stdio client: tools and their schemas, a chat answered
by the model, bad arguments as tool errors, and a server that starts with the daemon down."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.helpers import DaemonProc, free_port

pytestmark = pytest.mark.slow


async def _session(env: dict[str, str], calls: list[tuple[str, dict[str, Any]]]) -> tuple[Any, list[Any]]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "ohmygpu.cli.main", "mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        results = [await session.call_tool(name, args) for name, args in calls]
    return tools, results


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_mcp_tools_over_stdio(daemon: DaemonProc) -> None:
    calls = [
        ("list_models", {}),
        ("status", {}),
        ("chat", {"model": "smollm2", "prompt": "Say hello.", "max_tokens": 8, "temperature": 0}),
        ("chat", {"model": "smollm2"}),  # neither prompt nor messages
        ("chat", {"model": "nope", "prompt": "hi"}),
        ("chat", {"model": "smollm2", "prompt": "hi", "temperature": "hot"}),
        ("transcribe", {"path": "/nonexistent/file.wav"}),
    ]
    tools, results = anyio.run(_session, daemon.env, calls)
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) >= {"chat", "list_models", "status", "pull_model", "transcribe"}
    assert all(t.description and t.input_schema.get("type") == "object" for t in tools.tools)
    assert set(by_name["chat"].input_schema["properties"]) >= {"model", "prompt", "messages", "temperature"}
    models, status, answer, neither, missing, bad_type, no_file = results
    assert not models.is_error and "smollm2" in _text(models)
    assert not status.is_error and '"running"' in _text(status)
    assert not answer.is_error and len(_text(answer).strip()) > 0
    assert neither.is_error and "exactly one of prompt or messages" in _text(neither)
    assert missing.is_error and "nope" in _text(missing)
    assert bad_type.is_error and "temperature" in _text(bad_type)
    assert no_file.is_error and "cannot read" in _text(no_file)


def test_mcp_starts_with_the_daemon_down(daemon: DaemonProc) -> None:
    env = {**daemon.env, "OMG_GRPC_ADDR": f"127.0.0.1:{free_port()}"}
    tools, (status, chat) = anyio.run(_session, env, [("status", {}), ("chat", {"model": "m", "prompt": "hi"})])
    assert tools.tools
    answer = json.loads(_text(status))
    assert not status.is_error and answer["running"] is False and "omg serve" in answer["message"]
    assert chat.is_error and "omg serve" in _text(chat)


def test_mcp_pull_and_transcribe(tmp_path, whisper_path, audio, gguf_path) -> None:
    from tests.fakes.hub import FakeHub, FakeRepo
    from tests.helpers import new_daemon

    with FakeHub([FakeRepo("test-org/smol-GGUF", {"smol.Q4_1.gguf": gguf_path.read_bytes()})]) as hub:
        d = new_daemon(tmp_path, extra_env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hf"),
                                            "HF_HUB_DISABLE_XET": "1"}).start()
        try:
            assert d.omg("model", "add", str(whisper_path), "--name", "whisper-tiny.en").returncode == 0
            calls = [
                ("pull_model", {"source": "hf.co/test-org/smol-GGUF", "name": "pulled"}),
                ("pull_model", {"source": "hf.co/test-org/missing-GGUF"}),
                ("transcribe", {"path": str(audio["wav"])}),
                ("transcribe", {"path": str(audio["wav"]), "format": "srt"}),
                ("transcribe", {"path": str(audio["random"])}),
                ("list_models", {}),
            ]
            _, (pulled, missing, text, srt, noise, models) = anyio.run(_session, d.env, calls)
            assert not pulled.is_error and json.loads(_text(pulled))["state"] == "done", _text(pulled)
            assert missing.is_error and "missing-GGUF" in _text(missing)
            assert not text.is_error and "fox" in _text(text).lower()
            assert not srt.is_error and _text(srt).startswith("1\n00:00:00,")
            assert noise.is_error and "not audio" in _text(noise)
            assert "pulled" in _text(models) and "whisper" in _text(models)
        finally:
            d.stop()
