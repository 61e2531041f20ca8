"""OpenAI's Responses API with the official `openai` client against the daemon serving SmolLM2:
create streamed and not, a conversation continued by previous_response_id from the daemon's
index (also after a restart), function calls and their outputs, structured output through
`responses.parse`, store: false, get and delete, and refusals by name."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                          "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.http + "/v1", api_key="unused", max_retries=0)


def test_create_get_and_delete(client: openai.OpenAI) -> None:
    r = client.responses.create(model="smollm2", input="Say hello.", instructions="Be brief.",
                                temperature=0, max_output_tokens=10)
    assert r.id.startswith("resp_") and r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    assert r.usage.output_tokens == 10 and r.usage.input_tokens > 0
    got = client.responses.retrieve(r.id)
    assert got.output_text == r.output_text and got.id == r.id
    items = client.responses.input_items.list(r.id)
    assert items.data[0].content[0].text == "Say hello."
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_streamed_events_match_the_answer(client: openai.OpenAI) -> None:
    args = dict(model="smollm2", input="Tell me about the sea.", temperature=0, max_output_tokens=16)
    whole = client.responses.create(**args)
    events = list(client.responses.create(stream=True, **args))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.incomplete"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert kind in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text
    # The SDK's own stream helper assembles the same answer (it wants an answer that completes).
    done = dict(model="smollm2", input="Say hi.", temperature=0, max_output_tokens=300)
    with client.responses.stream(**done) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == client.responses.create(**done).output_text


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI, daemon: DaemonProc) -> None:
    first = client.responses.create(model="smollm2", input="My name is Ada. Remember it.", temperature=0,
                                    max_output_tokens=8)
    second = client.responses.create(model="smollm2", input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=8)
    # The daemon sent the whole conversation: the prompt holds the first turn and its answer.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # ...and the first turn's KV cache was reused for it.
    assert second.usage.input_tokens_details.cached_tokens > 0
    unstored = client.responses.create(model="smollm2", input="x", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="smollm2", input="y", previous_response_id=unstored.id, max_output_tokens=2)


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    r = client.responses.create(model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
                                tool_choice={"type": "function", "name": "get_weather"}, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    answer = client.responses.create(model="smollm2", previous_response_id=r.id, tools=[WEATHER], temperature=0,
                                     max_output_tokens=12, input=[{"type": "function_call_output",
                                                                   "call_id": calls[0].call_id, "output": "Sunny, 21 C"}])
    assert answer.output_text
    # Streamed, the arguments arrive as deltas that join to the whole.
    events = list(client.responses.create(model="smollm2", input="Weather in Rome?", tools=[WEATHER], stream=True,
                                          tool_choice="required", temperature=0))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments and json.loads(deltas)


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.responses.parse(model="smollm2", input="Name a city in France as JSON.", text_format=City,
                               temperature=0, max_output_tokens=60)
    assert isinstance(r.output_parsed, City)


@pytest.mark.parametrize("extra, field", [
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"include": ["file_search_call.results"]}, "include[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"no_such": 1}, "no_such"),
    ({"previous_response_id": "resp_missing"}, None),
])
def test_refusals_name_the_field(daemon: DaemonProc, extra: dict, field: str | None) -> None:
    r = httpx.post(daemon.http + "/v1/responses", timeout=60,
                   json={"model": "smollm2", "input": "hi", "max_output_tokens": 2, **extra})
    err = r.json()["error"]
    if field is None:
        assert r.status_code == 404 and "resp_missing" in err["message"]
    else:
        assert r.status_code == 400 and err["param"] == field, r.text


def test_stored_responses_survive_a_restart(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        c = openai.OpenAI(base_url=d.http + "/v1", api_key="x", max_retries=0)
        first = c.responses.create(model="m", input="Remember: the code is 42.", temperature=0, max_output_tokens=4)
        d.stop()
        d.start()
        assert c.responses.retrieve(first.id).output_text == first.output_text
        nxt = c.responses.create(model="m", input="What is the code?", previous_response_id=first.id,
                                 temperature=0, max_output_tokens=4)
        assert nxt.usage.input_tokens > first.usage.input_tokens
    finally:
        d.stop()
