"""The Anthropic Messages API as a translator, without a model or a daemon: a request becomes
the daemon API's ChatRequest, scripted runtime answers come back as Anthropic's message and
event stream (read by the official `anthropic` SDK), and refusals and errors come in
Anthropic's error envelope.

As in test_translators.py, the real application runs in-process over the real daemon API; only
the orchestrator behind it is a stand-in (tests/fakes/orchestrator.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from ohmygpu.core.errors import ContextLengthExceeded, ModelNotFound, ServerBusy, WorkerFailed
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.api import DaemonAPI
from ohmygpu.gateway.app import build_app
from ohmygpu.gateway.errors import dialect_for
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.testclient import TestClient

from tests.fakes.orchestrator import ScriptedOrchestrator

R = runtime_pb2
HI = [{"role": "user", "content": "hi"}]


class App:
    def __init__(self, http: TestClient, orchestrator: ScriptedOrchestrator) -> None:
        self.http, self.orchestrator = http, orchestrator
        # The official SDK over the in-process app (TestClient is an httpx.Client).
        self.sdk = anthropic.Anthropic(base_url="http://127.0.0.1:11434", api_key="k", http_client=http,
                                       max_retries=0)

    def post(self, body: dict[str, Any], path: str = "/v1/messages", **kw: Any) -> Any:
        return self.http.post(path, json=body, **kw)

    def only_request(self) -> Any:
        assert len(self.orchestrator.requests) == 1, self.orchestrator.requests
        return self.orchestrator.requests[0]


def _app(tmp_path: Path, **env: str) -> App:
    cfg = Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_CONFIG": str(tmp_path / "none.toml"), **env})
    orchestrator = ScriptedOrchestrator()
    api = DaemonAPI(cfg, ModelStore(tmp_path), orchestrator,  # type: ignore[arg-type]
                    jobs=None, runs=None, events=None)  # type: ignore[arg-type]
    return App(TestClient(build_app(cfg, api), base_url="http://127.0.0.1:11434"), orchestrator)


@pytest.fixture()
def app(tmp_path: Path) -> App:
    return _app(tmp_path)


def _error(r: Any, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    return body["error"]["message"]


# --- requests -> ChatRequest -------------------------------------------------------------------

def test_a_conversation_with_tools_becomes_one_chat_request(app: App) -> None:
    r = app.post({
        "model": "m", "max_tokens": 50, "temperature": 0.3, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Use tools."}],
        "metadata": {"user_id": "u1"}, "service_tier": "auto", "thinking": {"type": "disabled"},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "20C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True},
                {"type": "text", "text": "And so?"}]}],
        "tools": [{"name": "weather", "description": "Weather now",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": False}})
    assert r.status_code == 200, r.text
    req = app.only_request()
    assert isinstance(req, R.ChatRequest) and req.model == "m"
    assert [(m.role, m.content, m.tool_call_id) for m in req.messages] == [
        ("system", "Be brief.\n\nUse tools.", ""), ("user", "Weather in Paris?", ""),
        ("assistant", "Checking.", ""), ("tool", "20C", "toolu_1"), ("tool", "Error: no such city", "toolu_2"),
        ("user", "And so?", "")]
    call = req.messages[2].tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == ("toolu_1", "weather", {"city": "Paris"})
    p = req.params
    assert (p.max_tokens, round(p.temperature, 5), round(p.top_p, 5), p.top_k, list(p.stop)) == (
        50, 0.3, 0.9, 5, ["END"])
    assert [(t.name, t.description) for t in req.tools] == [("weather", "Weather now")]
    assert json.loads(req.tools[0].parameters_json)["properties"] == {"city": {"type": "string"}}
    assert req.tool_choice.mode == R.TOOL_CHOICE_MODE_AUTO


@pytest.mark.parametrize(("choice", "mode", "name"), [
    ({"type": "any"}, R.TOOL_CHOICE_MODE_REQUIRED, ""),
    ({"type": "tool", "name": "f"}, R.TOOL_CHOICE_MODE_FUNCTION, "f"),
    ({"type": "none"}, R.TOOL_CHOICE_MODE_NONE, ""),
])
def test_tool_choice_modes(app: App, choice: dict, mode: int, name: str) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    r = app.post({"model": "m", "max_tokens": 5, "messages": HI, "tools": tools, "tool_choice": choice})
    assert r.status_code == 200, r.text
    req = app.only_request()
    assert (req.tool_choice.mode, req.tool_choice.function_name) == (mode, name)


# Each refusal names the field (Anthropic's invalid_request_error, 400), before any model is asked.
REFUSED = [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"seed": 1}, "seed"),  # not Anthropic's
    ({"stop": ["x"]}, "stop"),  # Anthropic's is stop_sequences
    ({"container": "c"}, "container"),
    ({"mcp_servers": []}, "mcp_servers"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"speed": "fast"}, "speed"),
    ({"metadata": {"user_id": "u", "other": 1}}, "metadata.other"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "mystery"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {}}]}]}]}, "messages[0].content[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "extra": 1}]}]},
     "messages[0].content[0].extra"),
    ({"messages": [*HI, {"role": "assistant", "content": [{"type": "thinking", "thinking": "..."}]}, *HI]},
     "messages[1].content[0]"),
    ({"messages": [*HI, {"role": "assistant", "content": "The answer is"}]}, "messages[1]"),  # a prefill
    ({"system": [{"type": "image", "source": {}}]}, "system[0]"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "g"}},
     "tool_choice.name"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
    ({"cache_control": {"type": "forever"}}, "cache_control.type"),
]


@pytest.mark.parametrize(("change", "field"), REFUSED)
def test_what_cannot_be_honoured_is_refused_naming_the_field(app: App, change: dict, field: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": HI, **change}
    body = {k: v for k, v in body.items() if v is not None}
    message = _error(app.post(body), 400, "invalid_request_error")
    assert f"'{field}" in message, message
    assert app.orchestrator.requests == []


def test_sdk_errors_carry_anthropics_body(app: App) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        app.sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in e.value.body["error"]["message"]


# --- answers -> Anthropic's message ------------------------------------------------------------

def _final(reason: int, *, prompt: int = 9, cached: int = 4, completion: int = 3, stop: str = "") -> Any:
    return R.ChatResponse(finish_reason=reason, stop_sequence=stop, usage=R.Usage(
        prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion))


TOOL_SCRIPT = [
    R.ChatResponse(content="Let me look."),
    R.ChatResponse(tool_calls=[R.ToolCallDelta(index=0, id="call_abc", name="weather", arguments='{"city": ')]),
    R.ChatResponse(tool_calls=[R.ToolCallDelta(index=0, arguments='"Paris"}')]),
    R.ChatResponse(tool_calls=[R.ToolCallDelta(index=1, id="call_def", name="time", arguments="{}")]),
    _final(R.FINISH_REASON_TOOL_CALLS),
]


def test_message_with_text_and_tool_use(app: App) -> None:
    app.orchestrator.script = TOOL_SCRIPT
    m = app.sdk.messages.create(model="m", max_tokens=20, messages=HI)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == "m"
    assert [b.type for b in m.content] == ["text", "tool_use", "tool_use"]
    assert m.content[0].text == "Let me look."
    assert (m.content[1].id, m.content[1].name, m.content[1].input) == ("toolu_abc", "weather", {"city": "Paris"})
    assert (m.content[2].name, m.content[2].input) == ("time", {})
    assert (m.stop_reason, m.stop_sequence) == ("tool_use", None)
    # input_tokens are the ones evaluated; with those read from the cache they make the prompt.
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (5, 4, 3)


def test_stream_is_anthropics_event_sequence_and_joins_to_the_same_message(app: App) -> None:
    app.orchestrator.script = TOOL_SCRIPT
    whole = app.sdk.messages.create(model="m", max_tokens=20, messages=HI)
    raw = app.http.post("/v1/messages", json={"model": "m", "max_tokens": 20, "messages": HI, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in raw.text.splitlines() if line.startswith("event: ")]
    assert events == ["message_start", "ping",
                      "content_block_start", "content_block_delta", "content_block_stop",
                      "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                      "content_block_start", "content_block_delta", "content_block_stop",
                      "message_delta", "message_stop"]
    with app.sdk.messages.stream(model="m", max_tokens=20, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me look."
    assert final.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})


def test_disable_parallel_tool_use_keeps_one_tool_use(app: App) -> None:
    app.orchestrator.script = TOOL_SCRIPT
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in ("weather", "time")]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    m = app.sdk.messages.create(model="m", max_tokens=20, messages=HI, tools=tools, tool_choice=choice)
    with app.sdk.messages.stream(model="m", max_tokens=20, messages=HI, tools=tools, tool_choice=choice) as s:
        streamed = s.get_final_message()
    assert [b.type for b in m.content] == [b.type for b in streamed.content] == ["text", "tool_use"]


@pytest.mark.parametrize(("final", "reason", "sequence"), [
    (_final(R.FINISH_REASON_STOP), "end_turn", None),
    (_final(R.FINISH_REASON_STOP, stop="END"), "stop_sequence", "END"),
    (_final(R.FINISH_REASON_LENGTH, completion=20), "max_tokens", None),
    (_final(R.FINISH_REASON_LENGTH, completion=3), "model_context_window_exceeded", None),
])
def test_stop_reasons(app: App, final: Any, reason: str, sequence: str | None) -> None:
    app.orchestrator.script = [R.ChatResponse(content="x"), final]
    m = app.sdk.messages.create(model="m", max_tokens=20, messages=HI)
    with app.sdk.messages.stream(model="m", max_tokens=20, messages=HI) as s:
        streamed = s.get_final_message()
    assert (m.stop_reason, m.stop_sequence) == (streamed.stop_reason, streamed.stop_sequence) == (reason, sequence)


def test_count_tokens_asks_the_daemon_api(app: App) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    counted = app.sdk.messages.count_tokens(model="m", messages=HI, system="s", tools=tools)
    assert counted.input_tokens == 7
    req = app.only_request()
    assert isinstance(req, R.CountTokensRequest)
    assert [m.role for m in req.chat.messages] == ["system", "user"] and req.chat.tools[0].name == "f"
    assert app.post({"model": "m", "messages": HI, "max_tokens": 5}, "/v1/messages/count_tokens").status_code == 400


# --- errors ------------------------------------------------------------------------------------

def test_missing_model_is_not_found_with_how_to_name_a_local_one(app: App) -> None:
    app.orchestrator.error = ModelNotFound("claude-sonnet-4-5")
    with pytest.raises(anthropic.NotFoundError) as e:
        app.sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
    assert e.value.body["error"]["type"] == "not_found_error"
    assert "omg model list" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        app.sdk.messages.count_tokens(model="claude-sonnet-4-5", messages=HI)


def test_a_prompt_over_the_window_is_prompt_is_too_long(app: App) -> None:
    # Claude Code compacts the conversation on an error that starts so.
    app.orchestrator.error = ContextLengthExceeded("the prompt has more than 2047 tokens")
    message = _error(app.post({"model": "m", "max_tokens": 5, "messages": HI}), 400, "invalid_request_error")
    assert message == "prompt is too long: the prompt has more than 2047 tokens"
    message = _error(app.post({"model": "m", "messages": HI}, "/v1/messages/count_tokens"), 400,
                     "invalid_request_error")
    assert message.startswith("prompt is too long: ")


def test_busy_is_overloaded(app: App) -> None:
    app.orchestrator.error = ServerBusy("server busy, please try again")
    _error(app.post({"model": "m", "max_tokens": 5, "messages": HI}), 503, "overloaded_error")


def test_error_after_the_stream_started_is_an_error_event(app: App) -> None:
    async def failing(request: Any) -> Any:
        yield R.ChatResponse(content="partial")
        raise WorkerFailed("the worker died")

    app.orchestrator.chat = failing  # type: ignore[method-assign]
    raw = app.post({"model": "m", "max_tokens": 5, "messages": HI, "stream": True})
    assert "event: error" in raw.text and "message_stop" not in raw.text
    error = json.loads(raw.text.split("event: error\ndata: ", 1)[1].split("\n", 1)[0])
    assert error == {"type": "error", "error": {"type": "api_error", "message": "the worker died"}}
    with pytest.raises(anthropic.APIStatusError):
        with app.sdk.messages.stream(model="m", max_tokens=5, messages=HI) as s:
            s.get_final_message()


def test_routes_and_bounds_answer_in_anthropics_envelope(app: App) -> None:
    assert dialect_for("/v1/messages") == dialect_for("/v1/messages/count_tokens") == "anthropic"
    assert dialect_for("/v1/messagesx") == "openai"
    _error(app.http.get("/v1/messages"), 405, "invalid_request_error")
    _error(app.http.post("/v1/messages/batches", json={}), 404, "not_found_error")
    _error(app.http.post("/v1/messages", content=b"{}", headers={"content-type": "text/plain"}), 415,
           "invalid_request_error")


def test_x_api_key_is_the_token(tmp_path: Path) -> None:
    app = _app(tmp_path, OMG_TOKEN="secret")
    body = {"model": "m", "max_tokens": 5, "messages": HI}
    _error(app.post(body), 401, "authentication_error")
    _error(app.post(body, headers={"x-api-key": "wrong"}), 401, "authentication_error")
    assert app.post(body, headers={"x-api-key": "secret", "anthropic-version": "2023-06-01"}).status_code == 200
    assert app.post(body, headers={"authorization": "Bearer secret"}).status_code == 200
    # The other dialects take it too (one credential check for every route).
    r = app.http.post("/v1/chat/completions", json={"model": "m", "messages": HI}, headers={"x-api-key": "secret"})
    assert r.status_code == 200
    with pytest.raises(anthropic.AuthenticationError):
        app.sdk.messages.create(model="m", max_tokens=5, messages=HI)
    ok = anthropic.Anthropic(base_url="http://127.0.0.1:11434", api_key="secret", http_client=app.http)
    assert ok.messages.create(model="m", max_tokens=5, messages=HI).content[0].text == "ok"
