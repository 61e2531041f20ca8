"""The official `openai` client, unchanged, against the daemon serving SmolLM2."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.helpers import DaemonProc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.http + "/v1", api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    assert "smollm2" in [m.id for m in client.models.list()]
    m = client.models.retrieve("smollm2")
    assert m.id == "smollm2" and m.owned_by == "ohmygpu"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing-model")


def test_chat_non_streamed(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streamed_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        max_tokens=16, temperature=0, seed=5, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    # Streamed and non-streamed give the same text for the same seeded request.
    whole = client.chat.completions.create(
        model="smollm2", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        max_tokens=16, temperature=0, seed=5)
    assert whole.choices[0].message.content == text


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    # Bounded strings and array: the grammar then closes the object within max_tokens, whatever
    # a 135M model would ramble (unbounded, it repeats one river until the answer is cut off).
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "population": {"type": "integer"},
        "rivers": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3}},
        "required": ["city", "population", "rivers"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Tell me about Paris as JSON."}], max_tokens=200,
        temperature=0.5, seed=11,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_forced_tool_call(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                        "unit": {"enum": ["c", "f"]}},
                       "required": ["city", "unit"], "additionalProperties": False}}}]
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris in celsius?"}],
        tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=100, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("c", "f")
    # Streamed: the same call arrives as deltas the client can assemble.
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris in celsius?"}],
        tools=tools, tool_choice="required", max_tokens=100, temperature=0, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert "city" in json.loads("".join(d.function.arguments or "" for d in deltas))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    # A tool answer continues the conversation.
    follow = client.chat.completions.create(model="smollm2", max_tokens=20, temperature=0, messages=[
        {"role": "user", "content": "What is the weather in Paris in celsius?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}])
    assert follow.choices[0].message.content


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0,
                                  seed=1)
    assert r.choices[0].text and r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length"
    stream = list(client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6,
                                            temperature=0, seed=1, stream=True))
    assert "".join(c.choices[0].text for c in stream if c.choices) == r.choices[0].text


def test_stop_sequences(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "Describe a sunny day in the park."}]
    full = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=30, temperature=0, seed=3)
    text = full.choices[0].message.content
    word = text.split()[4]
    cut = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=30, temperature=0, seed=3,
                                         stop=[word, "never-appears"])
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_errors_in_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "invalid_request_error" and "nope" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}], max_tokens=2**31)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}], temperature=-1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=[{"role": "wizard", "content": "x"}])
