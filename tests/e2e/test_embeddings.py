"""Embeddings through the daemon with the official clients: OpenAI's embeddings.create (float
and base64), Ollama's embed and the older /api/embeddings, the CLI, and the properties an
embedding must have (same text same vector, related texts closer, batch equals one by one)."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import ollama
import openai
import pytest

from tests.helpers import DaemonProc

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "A kitten was sitting on the rug.",
         "Stock markets fell sharply today.", "The central bank raised interest rates."]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.http}/v1", api_key="unused", max_retries=0)


def test_openai_embeddings_properties(client: openai.OpenAI) -> None:
    batch = client.embeddings.create(model="smollm2", input=TEXTS, encoding_format="float")
    assert [d.index for d in batch.data] == [0, 1, 2, 3] and batch.usage.prompt_tokens > 10
    vectors = [d.embedding for d in batch.data]
    assert all(len(v) == 576 and abs(math.hypot(*v) - 1) < 1e-3 for v in vectors)
    cat, kitten, stocks, bank = vectors
    assert _cos(cat, kitten) > _cos(cat, stocks) and _cos(cat, kitten) > _cos(cat, bank)
    assert _cos(stocks, bank) > _cos(stocks, kitten)
    # Same text, same vector; a batch equals the texts embedded one by one.
    again = client.embeddings.create(model="smollm2", input=TEXTS[0], encoding_format="float").data[0].embedding
    assert _cos(again, cat) > 0.9999
    for text, v in zip(TEXTS, vectors):
        one = client.embeddings.create(model="smollm2", input=text, encoding_format="float").data[0].embedding
        assert _cos(one, v) > 0.999


def test_base64_encoding_and_dimensions(client: openai.OpenAI, daemon: DaemonProc) -> None:
    floats = client.embeddings.create(model="smollm2", input="hello", encoding_format="float").data[0].embedding
    # The openai client asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model="smollm2", input="hello").data[0].embedding
    assert max(abs(a - b) for a, b in zip(default, floats)) < 1e-6
    raw = httpx.post(f"{daemon.http}/v1/embeddings", json={"model": "smollm2", "input": "hello",
                                                            "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(floats, abs=1e-6)
    short = client.embeddings.create(model="smollm2", input="hello", dimensions=64,
                                     encoding_format="float").data[0].embedding
    assert len(short) == 64 and abs(math.hypot(*short) - 1) < 1e-3  # truncated, then normalised
    assert _cos(short, floats[:64]) > 0.9999


def test_bad_embedding_requests(daemon: DaemonProc) -> None:
    url = f"{daemon.http}/v1/embeddings"
    cases = [
        ({"model": "smollm2"}, "input"),
        ({"model": "smollm2", "input": []}, "input"),
        ({"model": "smollm2", "input": [""]}, "empty"),
        ({"model": "smollm2", "input": [1, 2, 3]}, "token ids"),
        ({"model": "smollm2", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "smollm2", "input": "x", "dimensions": 100000}, "dimensions"),
    ]
    for body, fragment in cases:
        r = httpx.post(url, json=body)
        assert r.status_code == 400 and fragment in r.json()["error"]["message"], (body, r.text)
    r = httpx.post(url, json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_ollama_client_embed(daemon: DaemonProc) -> None:
    client = ollama.Client(host=daemon.http)
    resp = client.embed(model="smollm2", input=TEXTS[:2])
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0]) == 576
    assert abs(math.hypot(*resp.embeddings[0]) - 1) < 1e-3 and resp.prompt_eval_count > 0
    single = client.embed(model="smollm2", input=TEXTS[0]).embeddings[0]
    assert _cos(single, resp.embeddings[0]) > 0.999
    legacy = client.embeddings(model="smollm2", prompt=TEXTS[0]).embedding
    assert len(legacy) == 576 and _cos(legacy, single) > 0.999  # same direction, not normalised
    long_text = "word " * 2500  # more tokens than the 2048-token context
    r = httpx.post(f"{daemon.http}/api/embed", json={"model": "smollm2", "input": long_text, "truncate": False},
                   timeout=60)
    assert r.status_code == 400 and "context window" in r.json()["error"]
    # (truncation itself is checked on the worker with a small context: embedding 2048 tokens
    # with an LLM is as slow as evaluating a 2048-token prompt: ~15 s on this 2-core VM)


def test_chat_and_embeddings_of_one_model_coexist(daemon: DaemonProc, client: openai.OpenAI) -> None:
    client.embeddings.create(model="smollm2", input="warm")
    chat = client.chat.completions.create(model="smollm2", max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content is not None
    client.embeddings.create(model="smollm2", input="still here")
    ps = daemon.omg("ps").stdout
    assert "embeddings" in ps and "chat" in ps, ps


def test_cli_embed(daemon: DaemonProc) -> None:
    r = daemon.omg("embed", "smollm2", "hello", "world", "--dimensions", "8")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(len(eval(line)) == 8 for line in lines)  # noqa: S307 - our own JSON lists
    r = daemon.omg("embed", "nope", "x")
    assert r.returncode == 1 and "nope" in r.stderr
