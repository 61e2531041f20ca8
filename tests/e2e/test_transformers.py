"""Hugging Face format models through the real daemon: `omg model add` of the folders, the official
openai client (chat streamed and not, embeddings), Ollama's /api/embed, /v1/rerank and /v2/rerank,
what the transformers runtime refuses, and the estimate the budget uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def hf_daemon(tmp_path_factory: pytest.TempPathFactory, hf_smollm2_path: Path, minilm_path: Path,
              reranker_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("hf"), extra_env={"OMG_NUM_THREADS": "1",
                                                             "OMG_CONTEXT_LENGTH": "1024"}).start()
    try:
        for path, name in ((hf_smollm2_path, "smol-hf"), (minilm_path, "minilm"), (reranker_path, "rr")):
            added = d.omg("model", "add", str(path), "--name", name)
            assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


def _client(d: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{d.http}/v1", api_key="none", timeout=120, max_retries=0)


def test_models_are_listed_with_their_kind_and_estimate(hf_daemon: DaemonProc) -> None:
    models = {m["name"]: m for m in json.loads(hf_daemon.omg("model", "ls", "--json").stdout)["models"]}
    assert {models[n]["kind"] for n in ("smol-hf", "minilm", "rr")} == \
        {"MODEL_KIND_LLM", "MODEL_KIND_EMBEDDING", "MODEL_KIND_RERANKER"}
    est = httpx.get(f"{hf_daemon.http}/v1/store:estimate", params={"name": "smol-hf"}, timeout=30).json()
    # bf16 weights from the safetensors header (135M parameters x 2 bytes), a KV cache for 1024 tokens.
    assert 250 << 20 < int(est["weightsBytes"]) < 300 << 20 and int(est["kvCacheBytes"]) > 0
    assert est["contextLength"] == 1024
    info = hf_daemon.omg("model", "info", "minilm")
    assert info.returncode == 0 and "BertModel" in info.stdout and "mean, normalized (384" in info.stdout
    show = httpx.post(f"{hf_daemon.http}/api/show", json={"model": "smol-hf"}, timeout=30).json()
    assert show["capabilities"] == ["completion"]  # no tools: the runtime refuses them


def test_openai_chat_streamed_and_not(hf_daemon: DaemonProc) -> None:
    client = _client(hf_daemon)
    msgs = [{"role": "user", "content": "Name three colors."}]
    full = client.chat.completions.create(model="smol-hf", messages=msgs, temperature=0, max_tokens=16)
    text = full.choices[0].message.content
    assert text and full.usage.completion_tokens <= 16 and full.usage.prompt_tokens > 5
    chunks = list(client.chat.completions.create(model="smol-hf", messages=msgs, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    ps = json.loads(hf_daemon.omg("ps", "--json").stdout)["models"]
    row = next(m for m in ps if m["name"] == "smol-hf")
    assert row["device"] == "cpu" and int(row.get("memoryBytes") or row.get("memory_bytes") or 0) > 100 << 20


def test_tools_and_json_are_refused_naming_them(hf_daemon: DaemonProc) -> None:
    client = _client(hf_daemon)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol-hf", messages=[{"role": "user", "content": "weather?"}],
                                       tools=[{"type": "function", "function": {"name": "w", "parameters": {}}}])
    assert "tool calls" in str(e.value) and "transformers" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol-hf", messages=[{"role": "user", "content": "json"}],
                                       response_format={"type": "json_object"})
    assert "response format" in str(e.value)


def test_embeddings_openai_and_ollama(hf_daemon: DaemonProc) -> None:
    import numpy as np

    resp = _client(hf_daemon).embeddings.create(model="minilm", input=["a cat", "a dog", "stock prices"])
    vectors = np.array([d.embedding for d in resp.data])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # a real model: cats are nearer dogs than stocks
    r = httpx.post(f"{hf_daemon.http}/api/embed", json={"model": "minilm", "input": "a cat"}, timeout=60)
    assert r.status_code == 200 and np.allclose(r.json()["embeddings"][0], vectors[0], atol=1e-5)
    r = httpx.post(f"{hf_daemon.http}/v1/chat/completions", timeout=60, json={
        "model": "minilm", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "embedding model" in r.json()["error"]["message"]


def test_rerank_v1_and_v2(hf_daemon: DaemonProc) -> None:
    docs = ["A cat is a small feline.", {"text": "Stocks fell today."}, "Cats purr."]
    r = httpx.post(f"{hf_daemon.http}/v1/rerank", timeout=60, json={
        "model": "rr", "query": "what is a cat?", "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2 and body["usage"]["total_tokens"] > 10
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    first = body["results"][0]
    text = docs[first["index"]]
    assert first["document"]["text"] == (text if isinstance(text, str) else text["text"])
    r2 = httpx.post(f"{hf_daemon.http}/v2/rerank", timeout=60, json={
        "model": "rr", "query": "what is a cat?", "documents": docs})
    assert r2.status_code == 200 and len(r2.json()["results"]) == 3 and "document" not in r2.json()["results"][0]
    assert [x["index"] for x in r2.json()["results"][:2]] == [x["index"] for x in body["results"]]
    native = httpx.post(f"{hf_daemon.http}/v1/omg/rerank", timeout=60, json={
        "model": "rr", "query": "what is a cat?", "documents": ["Cats purr.", "Rain."]})
    assert native.status_code == 200 and len(native.json()["results"]) == 2


@pytest.mark.parametrize("body, param", [
    ({"model": "rr", "query": "q"}, "documents"),
    ({"model": "rr", "query": "q", "documents": []}, "documents"),
    ({"model": "rr", "query": "q", "documents": [{"title": "no text"}]}, "documents[0]"),
    ({"model": "rr", "documents": ["d"]}, "query"),
    ({"model": "rr", "query": "q", "documents": ["d"], "rank_fields": ["title"]}, "rank_fields"),
    ({"model": "rr", "query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
    ({"model": "minilm", "query": "q", "documents": ["d"]}, "model"),
])
def test_rerank_errors_are_openai_style_400s(hf_daemon: DaemonProc, body: dict, param: str) -> None:
    r = httpx.post(f"{hf_daemon.http}/v1/rerank", json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
