"""OpenAI chat and completions, field by field, with the official `openai` client against the
daemon serving SmolLM2: log probabilities from llama.cpp's logits, n > 1, seeds, structured
outputs through `parse`, reasoning models' thoughts apart from their answers, and every field
OpenAI defines either honoured or refused by name."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.helpers import DaemonProc, gguf_with_template

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Say hello to the sea."}]
# SmolLM2's ChatML with a DeepSeek-R1 style reasoning block that the prompt opens (and Qwen3's
# switch: enable_thinking false writes an empty block, so the model answers at once).
THINKING_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\n\n</think>\n\n' }}"
    "{% else %}{{ '<think>\n' }}{% endif %}{% endif %}")


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.http + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def thinker(daemon: DaemonProc, gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = gguf_with_template(gguf_path, tmp_path_factory.mktemp("thinker") / "thinker.gguf", THINKING_TEMPLATE)
    added = daemon.omg("model", "add", str(path), "--name", "thinker")
    assert added.returncode == 0, added.stderr
    return "thinker"


def test_logprobs_are_the_models_distribution(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_tokens=8,
                                       logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
        tops = [a.logprob for a in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        # Greedy decoding takes the most likely token: it is the first alternative.
        assert t.top_logprobs[0].token == t.token and math.isclose(tops[0], t.logprob, abs_tol=1e-5)
        assert sum(math.exp(x) for x in tops) <= 1.0 + 1e-4
    # Streamed, the same tokens and numbers arrive with the deltas.
    chunks = list(client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_tokens=8,
                                                 logprobs=True, top_logprobs=3, stream=True))
    streamed = [t for c in chunks for ch in c.choices if ch.logprobs and ch.logprobs.content
                for t in ch.logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    # Without logprobs there are none.
    plain = client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_tokens=4)
    assert plain.choices[0].logprobs is None


def test_completions_logprobs_in_the_legacy_shape(daemon: DaemonProc) -> None:
    r = httpx.post(daemon.http + "/v1/completions", timeout=120, json={
        "model": "smollm2", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"][0] == 0 and all(len(d) == 2 for d in lp["top_logprobs"])
    assert all(x <= 0 for x in lp["token_logprobs"])
    # The worker has no fill-in-the-middle: a suffix is refused, not dropped.
    r = httpx.post(daemon.http + "/v1/completions", timeout=60, json={"model": "smollm2", "prompt": "a", "suffix": "b"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


def test_n_choices_seeded_and_reproducible(client: openai.OpenAI) -> None:
    args = dict(model="smollm2", messages=HELLO, temperature=1.0, max_tokens=12, seed=7)
    one = client.chat.completions.create(**args)
    again = client.chat.completions.create(**args)
    assert one.choices[0].message.content == again.choices[0].message.content  # seed: reproducible
    three = client.chat.completions.create(n=3, **args)
    assert [c.index for c in three.choices] == [0, 1, 2]
    texts = [c.message.content for c in three.choices]
    assert texts[0] == one.choices[0].message.content  # choice 0 is what n=1 gives
    assert len(set(texts)) > 1  # the others are seeded apart
    singles = [client.chat.completions.create(**{**args, "seed": 7 + i}) for i in range(3)]
    assert texts == [r.choices[0].message.content for r in singles]  # choice i is seed + i
    assert three.usage.completion_tokens == sum(r.usage.completion_tokens for r in singles)
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    chunks = list(client.chat.completions.create(n=2, stream=True, stream_options={"include_usage": True}, **args))
    by_index: dict[int, str] = {}
    finished = set()
    for c in chunks:
        for ch in c.choices:
            by_index[ch.index] = by_index.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1} and by_index[0] == texts[0] and by_index[1] == texts[1]
    assert chunks[-1].usage.completion_tokens == sum(r.usage.completion_tokens for r in singles[:2])


def test_limits_stops_and_identifiers(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_completion_tokens=5,
                                       user="u-1", safety_identifier="s-1", prompt_cache_key="k",
                                       metadata={"team": "a"}, store=False, service_tier="auto",
                                       parallel_tool_calls=False, modalities=["text"])
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    full = client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_tokens=20)
    text = full.choices[0].message.content
    word = text.split()[2]
    for stop in (word, [word, "zzzz"]):
        cut = client.chat.completions.create(model="smollm2", messages=HELLO, temperature=0, max_tokens=20, stop=stop)
        assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == text[:text.index(word)]


class Pet(BaseModel):
    name: str
    legs: int


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(model="smollm2", temperature=0, max_tokens=60, response_format=Pet,
                                      messages=[{"role": "user", "content": "Describe a dog as JSON."}])
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.legs >= 0


@pytest.mark.parametrize("extra, field", [
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"no_such_field": 1}, "no_such_field"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"n": 9}, "n"),
    ({"store": True}, "store"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"user": 5}, "user"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_fields_refused_by_name(daemon: DaemonProc, extra: dict, field: str) -> None:
    r = httpx.post(daemon.http + "/v1/chat/completions", timeout=60,
                   json={"model": "smollm2", "messages": HELLO, "max_tokens": 2, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"] and err["type"] == "invalid_request_error"


def test_message_fields_refused_by_name(daemon: DaemonProc) -> None:
    for message, field in (({"role": "user", "content": "hi", "audio": {"id": "a"}}, "messages[0].audio"),
                           ({"role": "user", "content": "hi", "colour": "red"}, "messages[0].colour"),
                           ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                            "messages[0].content")):
        r = httpx.post(daemon.http + "/v1/chat/completions", timeout=60,
                       json={"model": "smollm2", "messages": [message], "max_tokens": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_every_listed_model_can_be_retrieved(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "smollm2" in ids and len(ids) == len(set(ids))
    for model_id in ids:
        assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_reasoning_apart_from_the_answer(client: openai.OpenAI, daemon: DaemonProc, thinker: str) -> None:
    r = client.chat.completions.create(model=thinker, messages=HELLO, temperature=0, max_tokens=12)
    message = r.choices[0].message
    thought = message.model_extra["reasoning_content"]
    # The template opened the block: what the model wrote is reasoning (SmolLM2 never closes it).
    assert thought and "<think>" not in thought and message.content == ""
    chunks = list(client.chat.completions.create(model=thinker, messages=HELLO, temperature=0, max_tokens=12,
                                                 stream=True))
    streamed = "".join((ch.delta.model_extra or {}).get("reasoning_content") or "" for c in chunks for ch in c.choices)
    assert streamed == thought
    # reasoning_effort "none" asks the template for an empty block: the model answers at once.
    quick = client.chat.completions.create(model=thinker, messages=HELLO, temperature=0, max_tokens=12,
                                           reasoning_effort="none")
    assert quick.choices[0].message.content and "reasoning_content" not in (quick.choices[0].message.model_extra or {})
    # A model that cannot reason is refused when reasoning is asked for, before any work.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2, reasoning_effort="high")
    assert "does not support thinking" in e.value.message
    tags = httpx.post(daemon.http + "/api/show", json={"model": thinker}, timeout=30).json()
    assert "thinking" in tags["capabilities"]


def test_anthropic_thinking_blocks(daemon: DaemonProc, thinker: str) -> None:
    """Anthropic's thinking: asked of a reasoning model, its thoughts are a thinking block,
    streamed as thinking_delta; not asked, the template is told not to think."""
    import anthropic

    a = anthropic.Anthropic(base_url=daemon.http, api_key="x", max_retries=0)
    msg = [{"role": "user", "content": "Say hello to the sea."}]
    r = a.messages.create(model=thinker, max_tokens=12, messages=msg, extra_body={"temperature": 0},
                          thinking={"type": "enabled", "budget_tokens": 1024})
    assert r.content[0].type == "thinking" and r.content[0].thinking
    with a.messages.stream(model=thinker, max_tokens=12, messages=msg, extra_body={"temperature": 0},
                           thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        final = s.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == r.content[0].thinking
    plain = a.messages.create(model=thinker, max_tokens=12, messages=msg, extra_body={"temperature": 0})
    assert [b.type for b in plain.content] == ["text"]
    # A later turn sends the thinking block back: accepted, and left out of the prompt.
    again = a.messages.create(model=thinker, max_tokens=4, extra_body={"temperature": 0}, messages=[
        *msg, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                                                {"type": "text", "text": "Hello!"}]}, *msg])
    assert again.content
    with pytest.raises(anthropic.BadRequestError):
        a.messages.create(model="smollm2", max_tokens=4, messages=msg, thinking={"type": "enabled", "budget_tokens": 1024})


def test_ollama_think_and_logprobs(daemon: DaemonProc, thinker: str) -> None:
    """The `ollama` client's think and logprobs: the thoughts in message.thinking, apart from
    the content; each token's log probability with its alternatives."""
    import ollama

    o = ollama.Client(host=daemon.http)
    opts = {"temperature": 0, "num_predict": 10}
    r = o.chat(model=thinker, messages=HELLO, think=True, options=opts)
    assert r.message.thinking and "<think>" not in r.message.thinking and r.message.content == ""
    parts = list(o.chat(model=thinker, messages=HELLO, think=True, options=opts, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == r.message.thinking
    quick = o.chat(model=thinker, messages=HELLO, think=False, options=opts)
    assert quick.message.content and not quick.message.thinking
    g = o.generate(model=thinker, prompt="Say hello to the sea.", think=True, options=opts)
    assert g.thinking == r.message.thinking
    # A model that cannot think: refused, naming the field, as ollama does.
    with pytest.raises(ollama.ResponseError) as e:
        o.chat(model="smollm2", messages=HELLO, think=True, options=opts)
    assert e.value.status_code == 400 and "think" in e.value.error
    # Log probabilities, streamed and not, the same numbers.
    body = {"model": "smollm2", "messages": HELLO, "options": {"temperature": 0, "num_predict": 6},
            "logprobs": True, "top_logprobs": 2, "stream": False}
    whole = httpx.post(daemon.http + "/api/chat", json=body, timeout=120).json()
    lps = whole["logprobs"]
    assert len(lps) == whole["eval_count"] == 6 and "".join(t["token"] for t in lps) == whole["message"]["content"]
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in lps)
    with httpx.stream("POST", daemon.http + "/api/chat", json={**body, "stream": True}, timeout=120) as s:
        streamed = [t for line in s.iter_lines() if line for t in __import__("json").loads(line).get("logprobs", [])]
    assert [round(t["logprob"], 4) for t in streamed] == [round(t["logprob"], 4) for t in lps]
    gen = httpx.post(daemon.http + "/api/generate", timeout=120, json={
        "model": "smollm2", "prompt": "The sea is", "raw": True, "logprobs": True, "stream": False,
        "options": {"temperature": 0, "num_predict": 3}}).json()
    assert len(gen["logprobs"]) == 3
