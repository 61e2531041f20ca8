"""The official `anthropic` SDK, unchanged, against the daemon serving SmolLM2 on /v1/messages."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anthropic
import grpc
import httpx
import jsonschema
import pytest
from ohmygpu.api.v1 import chat_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "Say hello."}]
WEATHER = {"name": "get_weather", "description": "Current weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}}
ASK = [{"role": "user", "content": "What is the weather in Paris in celsius?"}]
# Greedy. The SDK (2.x) has no sampling arguments any more; the Messages API had (and older SDKs
# and clients send) temperature, top_p and top_k, which the daemon reads.
GREEDY = {"extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.http, api_key="unused", max_retries=0)


def test_message(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model="smollm2", max_tokens=12, **GREEDY, messages=HI)
    assert m.type == "message" and m.role == "assistant" and m.model == "smollm2" and m.id.startswith("msg_")
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens > 5 and 0 < m.usage.output_tokens <= 12


def test_stream_gives_the_same_message(client: anthropic.Anthropic) -> None:
    request = {"model": "smollm2", "max_tokens": 16, **GREEDY, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Name a fruit."}]}
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == final.content[0].text
    assert final.model_dump(exclude={"id", "usage"}) == whole.model_dump(exclude={"id", "usage"})
    assert final.usage.output_tokens == whole.usage.output_tokens
    # The same prompt, part of it read from the cache the first request left.
    prompt = whole.usage.input_tokens + whole.usage.cache_read_input_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == prompt


def test_forced_tool_call_round_trip(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model="smollm2", max_tokens=100, **GREEDY, messages=ASK, tools=[WEATHER],
                               tool_choice={"type": "tool", "name": "get_weather"})
    assert m.stop_reason == "tool_use"
    call = m.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])
    answer = client.messages.create(model="smollm2", max_tokens=30, **GREEDY, tools=[WEATHER],
                                    tool_choice={"type": "none"}, messages=[
                                        *ASK, {"role": "assistant", "content": m.content},
                                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                                      "content": "18 degrees and sunny"}]}])
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text
    assert answer.stop_reason in ("end_turn", "max_tokens")


def test_streamed_tool_use(client: anthropic.Anthropic) -> None:
    pieces, kinds = [], []
    with client.messages.stream(model="smollm2", max_tokens=100, **GREEDY, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert len(pieces) > 1 and kinds[0] == "message_start" and kinds[-1] == "message_stop"
    joined = json.loads("".join(pieces))
    jsonschema.validate(joined, WEATHER["input_schema"])
    assert final.stop_reason == "tool_use" and final.content[-1].input == joined


def test_count_tokens_is_the_prompt(client: anthropic.Anthropic, daemon: DaemonProc) -> None:
    def count(**kw: object) -> int:
        return client.messages.count_tokens(model="smollm2", **kw).input_tokens  # type: ignore[arg-type]

    short = count(messages=HI)
    longer = count(messages=[{"role": "user", "content": "Say hello. " * 20}])
    with_tools = count(messages=HI, tools=[WEATHER])
    assert 5 < short < longer and short < with_tools
    m = client.messages.create(model="smollm2", max_tokens=1, messages=HI)
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens == short
    # The daemon's own route (ChatService.CountTokens's http rule: the body is the ChatRequest).
    native = httpx.post(str(client.base_url).rstrip("/") + "/v1/omg/count_tokens",
                        json={"model": "smollm2", "messages": HI})
    assert native.status_code == 200 and native.json() == {"promptTokens": short}
    with grpc.insecure_channel(daemon.grpc_addr) as channel:  # and over gRPC
        chat = runtime_pb2.ChatRequest(model="smollm2", messages=[runtime_pb2.ChatMessage(role="user",
                                                                                          content=HI[0]["content"])])
        counted = chat_pb2_grpc.ChatServiceStub(channel).CountTokens(runtime_pb2.CountTokensRequest(chat=chat))
    assert counted.prompt_tokens == short


def test_stop_sequence(client: anthropic.Anthropic) -> None:
    request = {"model": "smollm2", "max_tokens": 40, **GREEDY,
               "messages": [{"role": "user", "content": "Count from 1 to 10 with commas."}]}
    full = client.messages.create(**request).content[0].text
    stop = next(s for s in (",", "\n", " ") if s in full)
    m = client.messages.create(**request, stop_sequences=["never in it", stop])
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop)
    assert m.content[0].text == full[:full.index(stop)]
    with client.messages.stream(**request, stop_sequences=[stop]) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", stop)


def test_errors_in_anthropics_format(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:  # the SDK insists on max_tokens; a raw post does not
        client.post("/v1/messages", cast_to=object, body={"model": "smollm2", "messages": HI})
    assert e.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "'max_tokens' is required"}}
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
    assert e.value.status_code == 404 and e.value.body["error"]["type"] == "not_found_error"
    message = e.value.body["error"]["message"]
    assert "claude-sonnet-4-5" in message and "omg model list" in message
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="smollm2", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "'messages[0].content[1].type' is \"image\"" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="smollm2", max_tokens=5,
                               messages=[{"role": "user", "content": 5}])  # type: ignore[list-item]
    assert e.value.body["error"]["message"] == "'messages[0].content' must be a string or an array of content blocks"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="smollm2", max_tokens=5, messages=HI, extra_body={"top_k": "ten"})
    assert e.value.body["error"]["message"] == "'top_k' must be an integer"
    long = [{"role": "user", "content": "word " * 3000}]  # over the test daemon's 2048-token window
    for call in (lambda: client.messages.create(model="smollm2", max_tokens=5, messages=long),
                 lambda: client.messages.count_tokens(model="smollm2", messages=long)):
        with pytest.raises(anthropic.BadRequestError) as e:
            call()
        assert e.value.body["error"]["message"].startswith("prompt is too long: ")


def test_edge_refusals_in_anthropics_format(daemon: DaemonProc) -> None:
    # The security layer (a cross-site page) and the connection's bounds (a head too big) answer
    # /v1/messages in Anthropic's envelope too.
    r = httpx.post(daemon.http + "/v1/messages", json={"model": "smollm2", "max_tokens": 1, "messages": HI},
                   headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error", r.text
    answer = b""
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as s:
        try:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (100 << 10) + b"\r\n\r\n")
        except OSError:  # the daemon stopped reading past its limit and closed
            pass
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "request_too_large"


def test_x_api_key_with_a_token(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, token="secret").start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        with pytest.raises(anthropic.AuthenticationError) as e:
            anthropic.Anthropic(base_url=d.http, api_key="wrong", max_retries=0).messages.create(
                model="smollm2", max_tokens=1, messages=HI)
        assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
        right = anthropic.Anthropic(base_url=d.http, api_key="secret", max_retries=0)  # sends x-api-key
        assert right.messages.with_raw_response.create(model="smollm2", max_tokens=1, messages=HI).status_code == 200
    finally:
        d.stop()
