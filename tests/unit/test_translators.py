"""The HTTP dialects as translators, without a model or a daemon: an OpenAI or Ollama request
becomes the daemon API's request (sampling bounds are one table for both; a refusal names the
dialect's field), streamed tool-call deltas come back joined, and errors come back in each
dialect's envelope.

As in test_translators_fuzz.py, the real application (gateway.app.build_app) runs in-process
over the real daemon API; only the orchestrator behind the API is a stand-in, which records
what it is given and answers what a test scripts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ohmygpu.core import sampling
from ohmygpu.core.errors import InvalidArgument, ModelNotFound
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon import admission
from ohmygpu.daemon.api import DaemonAPI
from ohmygpu.gateway.app import build_app
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.testclient import TestClient

from tests.fakes.orchestrator import ScriptedOrchestrator


class App:
    def __init__(self, client: TestClient, orchestrator: ScriptedOrchestrator, api: DaemonAPI) -> None:
        self.client, self.orchestrator, self.api = client, orchestrator, api

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body)

    def only_request(self) -> Any:
        assert len(self.orchestrator.requests) == 1, self.orchestrator.requests
        return self.orchestrator.requests[0]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    cfg = Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_CONFIG": str(tmp_path / "none.toml")})
    orchestrator = ScriptedOrchestrator()
    api = DaemonAPI(cfg, ModelStore(tmp_path), orchestrator,  # type: ignore[arg-type]
                    jobs=None, runs=None, events=None)  # type: ignore[arg-type]

    async def get_record(name: str) -> object:  # every model exists (the store is not under test)
        return object()

    monkeypatch.setattr(api, "get_record", get_record)
    return App(TestClient(build_app(cfg, api), base_url="http://127.0.0.1:11434"), orchestrator, api)


HI = [{"role": "user", "content": "hi"}]


# --- requests: each dialect -> the daemon API's request ---------------------------------------

def test_openai_chat_becomes_a_chat_request(app: App) -> None:
    r = app.post("/v1/chat/completions", {
        "model": "m", "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "2"}],
        "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": "END", "presence_penalty": -1.5,
        "max_completion_tokens": 12, "max_tokens": "not read: max_completion_tokens wins",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required", "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    req = app.only_request()
    assert isinstance(req, runtime_pb2.ChatRequest) and req.model == "m"
    assert [(m.role, m.content) for m in req.messages] == [("system", "be brief"), ("assistant", ""), ("tool", "2")]
    assert req.messages[1].tool_calls[0].arguments == '{"a": 1}' and req.messages[2].tool_call_id == "c1"
    p = req.params
    assert (p.temperature, round(p.top_p, 5), p.seed, list(p.stop), p.presence_penalty, p.max_tokens) == (
        0.5, 0.9, 7, ["END"], -1.5, 12)
    assert not p.HasField("top_k") and not p.HasField("frequency_penalty")
    assert [t.name for t in req.tools] == ["f"] and req.tool_choice.mode == runtime_pb2.TOOL_CHOICE_MODE_REQUIRED
    assert req.response_format.type == runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT


def test_openai_completion_defaults_to_16_tokens(app: App) -> None:
    assert app.post("/v1/completions", {"model": "m", "prompt": ["p"]}).status_code == 200
    req = app.only_request()
    assert isinstance(req, runtime_pb2.CompleteRequest) and req.prompt == "p" and req.params.max_tokens == 16


def test_ollama_chat_becomes_a_chat_request(app: App) -> None:
    r = app.post("/api/chat", {"model": "m", "messages": HI, "stream": False, "keep_alive": 30,
                               "truncate": False, "format": "json",
                               "options": {"temperature": 0.2, "top_k": 3, "min_p": 0.1, "repeat_penalty": 1.1,
                                           "num_predict": 9, "num_ctx": 512, "stop": ["a", "b"],
                                           "mirostat": 0, "use_mmap": True}})  # what llama.cpp does: accepted
    assert r.status_code == 200, r.text
    req = app.only_request()
    p = req.params
    assert (round(p.temperature, 5), p.top_k, round(p.min_p, 5), round(p.repeat_penalty, 5), p.max_tokens,
            list(p.stop)) == (0.2, 3, 0.1, 1.1, 9, ["a", "b"])
    assert req.keep_alive == "30s" and not req.truncate and req.context_length == 512
    assert req.response_format.type == runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT


@pytest.mark.parametrize("num_predict", [-1, -2])
def test_ollama_num_predict_until_done_leaves_max_tokens_unset(app: App, num_predict: int) -> None:
    r = app.post("/api/generate", {"model": "m", "prompt": "p", "stream": False, "options": {"num_predict": num_predict}})
    assert r.status_code == 200, r.text
    assert not app.only_request().params.HasField("max_tokens")


# --- sampling bounds: one table, each dialect's names ------------------------------------------

# (SamplingParams field, a value just inside, a value just outside); OpenAI's name is the
# field's own, Ollama's is options.<name> (num_predict for max_tokens).
BOUNDARIES = [
    ("temperature", 2, 2.01),  # Ollama's side allowed up to 100 before: the tighter bound won
    ("temperature", 0, -0.01),
    ("top_p", 1, 1.01),
    ("min_p", 0, -0.5),
    ("repeat_penalty", 10, 10.5),
    ("presence_penalty", -2, -2.5),  # Ollama's side allowed -100..100 before
    ("frequency_penalty", 2, 3),
    ("top_k", 1 << 20, (1 << 20) + 1),
    ("seed", -(1 << 63), -(1 << 63) - 1),
    ("max_tokens", 1 << 20, (1 << 20) + 1),
]


def _send(app: App, dialect: str, field: str, value: Any) -> Any:
    if dialect == "openai":
        return app.post("/v1/chat/completions", {"model": "m", "messages": HI, field: value})
    name = "num_predict" if field == "max_tokens" else field
    return app.post("/api/chat", {"model": "m", "messages": HI, "stream": False, "options": {name: value}})


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
@pytest.mark.parametrize(("field", "inside", "outside"), BOUNDARIES)
def test_the_same_bounds_in_both_dialects(app: App, dialect: str, field: str, inside: Any, outside: Any) -> None:
    ok = _send(app, dialect, field, inside)
    assert ok.status_code == 200, ok.text
    app.orchestrator.requests.clear()
    bad = _send(app, dialect, field, outside)
    assert bad.status_code == 400, bad.text
    assert not app.orchestrator.requests, "a refused request reached the orchestrator"
    if dialect == "openai":
        error = bad.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == field
    else:
        name = "num_predict" if field == "max_tokens" else field
        assert f"'options.{name}'" in bad.json()["error"]


def test_openai_max_tokens_is_named_as_sent(app: App) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        r = app.post("/v1/chat/completions", {"model": "m", "messages": HI, name: -1})
        assert r.status_code == 400 and r.json()["error"]["param"] == name


def test_a_wrong_type_is_named(app: App) -> None:
    r = app.post("/api/generate", {"model": "m", "prompt": "p", "options": {"seed": "x"}})
    assert r.status_code == 400 and r.json() == {"error": "'options.seed' must be an integer"}
    r = app.post("/v1/completions", {"model": "m", "prompt": "p", "top_p": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_too_many_stop_sequences_are_refused_at_the_edge(app: App, dialect: str) -> None:
    # The daemon refused more than 16 for gRPC only; the HTTP dialects passed them on.
    stops = [f"s{i}" for i in range(sampling.MAX_STOP + 1)]
    r = _send(app, dialect, "stop", stops)
    assert r.status_code == 400 and not app.orchestrator.requests
    assert _send(app, dialect, "stop", stops[:-1]).status_code == 200


def test_the_daemon_checks_a_grpc_request_against_the_same_table() -> None:
    cfg = Settings.load(environ={"OMG_HOME": "/nonexistent", "OMG_CONFIG": "/nonexistent/none.toml"})
    admission.check_sampling(run_spec_pb2.SamplingParams(temperature=2, top_p=1, max_tokens=0), cfg)
    for bad in (run_spec_pb2.SamplingParams(temperature=5),  # allowed up to 100 before
                run_spec_pb2.SamplingParams(top_p=1.5),  # not checked before
                run_spec_pb2.SamplingParams(presence_penalty=-3),
                run_spec_pb2.SamplingParams(max_tokens=cfg.max_tokens_limit + 1),
                run_spec_pb2.SamplingParams(stop=["x"] * 17)):
        with pytest.raises(InvalidArgument) as e:
            admission.check_sampling(bad, cfg)
        assert e.value.param == next(f.name for f, _ in bad.ListFields())


# --- tool calls: deltas joined once, for every dialect -------------------------------------------

SPLIT_CALL = [
    runtime_pb2.ChatResponse(tool_calls=[runtime_pb2.ToolCallDelta(index=0, id="call_1", name="weather",
                                                                   arguments='{"city": ')]),
    runtime_pb2.ChatResponse(tool_calls=[runtime_pb2.ToolCallDelta(index=0, arguments='"Oslo"}'),
                                         runtime_pb2.ToolCallDelta(index=1, id="call_2", name="time",
                                                                   arguments="{}")]),
    runtime_pb2.ChatResponse(finish_reason=runtime_pb2.FINISH_REASON_TOOL_CALLS),
]


def test_openai_joins_tool_call_deltas(app: App) -> None:
    app.orchestrator.script = SPLIT_CALL
    r = app.post("/v1/chat/completions", {"model": "m", "messages": HI})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]


def test_openai_streams_tool_call_deltas_as_they_come(app: App) -> None:
    app.orchestrator.script = SPLIT_CALL
    r = app.post("/v1/chat/completions", {"model": "m", "messages": HI, "stream": True})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0] == {"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": '{"city": '}}
    assert deltas[1] == {"index": 0, "function": {"arguments": '"Oslo"}'}}


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_joins_tool_call_deltas(app: App, stream: bool) -> None:
    # Non-streamed, each delta was read as a whole call: a call split over deltas lost its
    # arguments ({}) and its later pieces.
    app.orchestrator.script = SPLIT_CALL
    r = app.post("/api/chat", {"model": "m", "messages": HI, "stream": stream})
    final = json.loads(r.text.splitlines()[-1])
    assert final["done"] and final["done_reason"] == "stop"
    assert final["message"]["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
                                              {"function": {"name": "time", "arguments": {}}}]


# --- empty requests ---------------------------------------------------------------------------

def test_empty_messages_are_refused_once_for_every_edge(app: App) -> None:
    for body in ({"model": "m", "messages": []}, {"model": "m"}):
        r = app.post("/v1/chat/completions", body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert not app.orchestrator.requests

    async def grpc_chat() -> None:  # what the gRPC ChatService servicer calls
        async for _ in app.api.service("ChatService").Chat(runtime_pb2.ChatRequest(model="m")):
            pass

    with pytest.raises(InvalidArgument) as e:
        asyncio.run(grpc_chat())
    assert e.value.param == "messages" and not app.orchestrator.requests


@pytest.mark.parametrize(("path", "body", "mode"), [
    ("/api/chat", {"messages": []}, run_spec_pb2.MODE_UNSPECIFIED),
    ("/api/generate", {"prompt": ""}, run_spec_pb2.MODE_UNSPECIFIED),
    ("/api/embed", {"input": []}, run_spec_pb2.MODE_EMBEDDINGS),
    ("/api/embeddings", {"prompt": ""}, run_spec_pb2.MODE_EMBEDDINGS),
])
def test_an_empty_ollama_request_loads_or_unloads(app: App, path: str, body: dict[str, Any], mode: int) -> None:
    r = app.post(path, {"model": "m", **body})
    assert r.status_code == 200, r.text
    assert app.only_request() == ("load", "m", mode)
    app.orchestrator.requests.clear()
    # keep_alive 0 unloads, on every endpoint (embeddings used to load the model instead).
    r = app.post(path, {"model": "m", "keep_alive": 0, **body})
    assert r.status_code == 200, r.text
    assert app.only_request() == ("unload", "m")


# --- errors, in each dialect's envelope --------------------------------------------------------

def test_errors_in_each_dialects_envelope(app: App) -> None:
    app.orchestrator.error = ModelNotFound("nope")
    r = app.post("/v1/chat/completions", {"model": "nope", "messages": HI})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "nope" in error["message"] and error["code"] == "not_found"
    r = app.post("/api/chat", {"model": "nope", "messages": HI})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    app.orchestrator.error = None
    r = app.post("/api/chat", {"model": "m", "messages": HI, "format": {"type": "nonsense"}})
    assert r.status_code == 400 and "unknown type" in r.json()["error"]
    r = app.post("/v1/chat/completions", {"model": "m", "messages": HI, "n": 9})  # over fanout.MAX_CHOICES
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
