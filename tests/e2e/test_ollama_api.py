"""Ollama API completeness: /api/create (from a model, from an uploaded GGUF blob), /api/blobs,
/api/push, images and other fields refused rather than dropped, /api/embed's truncate and
dimensions, one /api/ps row per model. The official `ollama` client where it has a method."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import httpx
import ollama
import openai
import pytest

from ohmygpu.api.v1 import chat_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2
from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow
SYSTEM = "You are a pirate. Answer like one."
SEEDS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Arr, a pirate I be!"}]
HI = [{"role": "user", "content": "Hello there"}]
# A Jinja template that renders the contents alone: a prompt far shorter than SmolLM2's own
# template makes (which adds its default system prompt).
BARE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> ollama.Client:
    return ollama.Client(host=daemon.http, timeout=120)


def _show(d: DaemonProc, model: str) -> dict:
    """/api/show's whole answer (the client's ShowResponse has no `system`)."""
    r = httpx.post(d.http + "/api/show", json={"model": model}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _prompt_tokens(client: ollama.Client, model: str, messages: list[dict], **options: object) -> int:
    r = client.chat(model=model, messages=messages, options={"num_predict": 1, "temperature": 0, **options})
    return r.prompt_eval_count


def test_a_model_created_from_another_carries_its_settings_on_every_path(client: ollama.Client,
                                                                         daemon: DaemonProc) -> None:
    r = client.create(model="pirate", from_="smollm2", system=SYSTEM, messages=SEEDS,
                      parameters={"temperature": 0, "num_predict": 5, "seed": 3, "num_ctx": 1024, "stop": ["###"]})
    assert r.status == "success"
    show = client.show("pirate")
    assert show.modelfile.startswith("FROM smollm2\n") and f'SYSTEM """{SYSTEM}"""' in show.modelfile
    assert 'MESSAGE assistant """Arr, a pirate I be!"""' in show.modelfile
    assert "num_predict" in show.parameters and "num_ctx                        1024" in show.parameters
    assert _show(daemon, "pirate")["system"] == SYSTEM and show.details.parent_model == "smollm2"
    assert "im_start" in show.template and show.capabilities == ["completion"]
    # The system prompt and messages come first: the prompt is the base model's with them written out.
    spelled_out = [{"role": "system", "content": SYSTEM}, *SEEDS, *HI]
    assert _prompt_tokens(client, "pirate", HI) == _prompt_tokens(client, "smollm2", spelled_out)
    # A request's own system message replaces the model's; the messages still come after it.
    own = [{"role": "system", "content": "Be brief."}, *HI]
    assert _prompt_tokens(client, "pirate", own) == _prompt_tokens(
        client, "smollm2", [own[0], *SEEDS, *HI])
    # Parameters are defaults: 5 tokens unless the request asks otherwise, in every dialect.
    assert client.chat(model="pirate", messages=HI).eval_count == 5
    assert client.generate(model="pirate", prompt="Tell me a story", options={"num_predict": 2}).eval_count == 2
    oa = openai.OpenAI(base_url=daemon.http + "/v1", api_key="x").chat.completions.create(
        model="pirate", messages=HI)
    assert oa.usage.completion_tokens == 5
    assert oa.usage.prompt_tokens == _prompt_tokens(client, "smollm2", spelled_out)
    stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(daemon.grpc_addr))
    final = list(stub.Chat(runtime_pb2.ChatRequest(model="pirate", messages=[
        runtime_pb2.ChatMessage(role="user", content="Hello there")]), timeout=60))[-1]
    assert final.usage.completion_tokens == 5 and final.usage.prompt_tokens == oa.usage.prompt_tokens
    # num_ctx is the window it loads with; `omg model info` shows what it adds.
    assert next(m for m in client.ps().models if m.model == "pirate:latest").context_length == 1024
    info = daemon.omg("model", "info", "pirate").stdout
    assert "made from     smollm2" in info and SYSTEM in info and "max_tokens = 5" in info
    # A model made from a derived one inherits, field by field, what it does not set.
    client.create(model="pirate-hot", from_="pirate", parameters={"temperature": 0.9})
    params = client.show("pirate-hot").parameters
    assert "temperature                    0.9" in params and "num_predict                    5" in params
    assert _show(daemon, "pirate-hot")["system"] == SYSTEM
    # Created again under the same name: replaced (and its loaded worker with it).
    client.create(model="pirate-hot", from_="pirate", system="You are a parrot.")
    assert _show(daemon, "pirate-hot")["system"] == "You are a parrot."
    for name in ("pirate-hot", "pirate"):
        client.delete(name)


def test_a_template_replaces_the_files_own(client: ollama.Client) -> None:
    client.create(model="bare", from_="smollm2", template=BARE)
    show = client.show("bare")
    assert show.template == BARE and "TEMPLATE" in show.modelfile
    bare = _prompt_tokens(client, "bare", HI)
    assert bare < 8 < _prompt_tokens(client, "smollm2", HI)  # no default system prompt, no markup
    # Ollama's own (Go) templates, and Jinja that does not compile, are refused by name.
    for template, why in (("{{ .System }} {{ .Prompt }}", "Go"), ("{% for m in messages %}", "compile")):
        with pytest.raises(ollama.ResponseError) as e:
            client.create(model="broken", from_="smollm2", template=template)
        assert e.value.status_code == 400 and "'template'" in e.value.error and why in e.value.error
    client.delete("bare")


@pytest.mark.parametrize(("path", "body", "status", "named"), [
    ("/api/create", {"model": "q", "from": "smollm2", "quantize": "q4_K_M"}, 400, "'quantize'"),
    ("/api/create", {"model": "q", "from": "smollm2", "adapters": {"a.gguf": "sha256:" + "0" * 64}}, 400, "'adapters'"),
    ("/api/create", {"model": "q", "modelfile": "FROM smollm2"}, 400, "'modelfile'"),
    ("/api/create", {"model": "q"}, 400, "'from'"),
    ("/api/create", {"model": "q", "from": "smollm2", "files": {"m.gguf": "sha256:" + "0" * 64}}, 400, "not both"),
    ("/api/create", {"model": "q", "from": "ghost"}, 404, "ghost"),
    ("/api/create", {"model": "smollm2", "from": "smollm2", "system": "x"}, 409, "not made by create"),
    ("/api/create", {"model": "q", "from": "smollm2", "parameters": {"temperature": 5}}, 400, "'parameters.temperature'"),
    ("/api/create", {"model": "q", "from": "smollm2", "parameters": {"num_gpu": 9}}, 400, "'parameters.num_gpu'"),
    ("/api/create", {"model": "q", "from": "smollm2", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "'messages[0].role'"),
    ("/api/create", {"model": "q", "files": {"m.gguf": "sha256:" + "1" * 64}}, 404, "not uploaded"),
    ("/api/create", {"model": "q", "files": {"m.bin": "sha256:" + "1" * 64}}, 400, "'files'"),
    ("/api/push", {"model": "smollm2"}, 501, "registry"),
    ("/api/pull", {"model": "org/x", "insecure": "yes"}, 400, "'insecure'"),  # accepted as a boolean only
    ("/api/show", {"model": "smollm2", "verbose": True}, 400, "'verbose'"),
    ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "what is this?",
                                                     "images": ["aGVsbG8="]}]}, 400, "'messages[0].images'"),
    ("/api/generate", {"model": "smollm2", "prompt": "what is this?", "images": ["aGVsbG8="]}, 400, "'images'"),
    ("/api/chat", {"model": "smollm2", "messages": HI, "think": True}, 400, "'think'"),
    ("/api/generate", {"model": "smollm2", "prompt": "x", "raw": True, "think": False}, 400, "'think'"),
    ("/api/generate", {"model": "smollm2", "prompt": "x", "think": "maybe"}, 400, "'think'"),
    ("/api/chat", {"model": "smollm2", "messages": HI, "top_logprobs": 3}, 400, "'top_logprobs'"),
    ("/api/generate", {"model": "smollm2", "prompt": "x", "suffix": "y"}, 400, "'suffix'"),
    ("/api/generate", {"model": "smollm2", "prompt": "x", "template": "{{ .Prompt }}"}, 400, "'template'"),
    ("/api/generate", {"model": "smollm2", "prompt": "x", "context": [1, 2, 3]}, 400, "'context'"),
    ("/api/chat", {"model": "smollm2", "messages": HI, "options": {"mirostat": 2}}, 400, "'options.mirostat'"),
    ("/api/chat", {"model": "smollm2", "messages": HI, "options": {"num_thread": 4}}, 400, "'options.num_thread'"),
    ("/api/chat", {"model": "smollm2", "messages": HI, "options": {"temprature": 0.1}}, 400, "'options.temprature'"),
    ("/api/embed", {"model": "smollm2", "input": "x", "options": {"temperature": 0.1}}, 400,
     "'options.temperature'"),
])
def test_what_is_not_honoured_is_refused_by_name(daemon: DaemonProc, path: str, body: dict, status: int,
                                                 named: str) -> None:
    r = httpx.post(daemon.http + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and named in error, error


def test_options_that_ask_for_nothing_pass(client: ollama.Client) -> None:
    r = client.chat(model="smollm2", messages=HI, options={
        "num_predict": 1, "mirostat": 0, "mirostat_tau": 5.0, "repeat_last_n": 64, "use_mmap": True,
        "num_keep": 4, "typical_p": 1.0})
    assert r.done and r.eval_count == 1


def test_embed_dimensions_and_one_ps_row_per_model(client: ollama.Client, daemon: DaemonProc) -> None:
    short = client.embed(model="smollm2", input=["hello", "world"], dimensions=16)
    assert [len(v) for v in short.embeddings] == [16, 16]
    assert abs(sum(x * x for x in short.embeddings[0]) - 1) < 1e-3  # shortened, then normalised
    client.generate(model="smollm2", prompt="hi", options={"num_predict": 1})
    loaded = httpx.get(daemon.http + "/v1/loaded").json()["models"]
    workers = [m for m in loaded if m["name"] == "smollm2"]
    assert len(workers) == 2  # a chat worker and an embeddings worker ...
    rows = [m for m in client.ps().models if m.model == "smollm2:latest"]
    assert len(rows) == 1  # ... shown as one model, as Ollama does
    sizes = [int(w["memoryBytes"]) for w in workers]  # measured live: two calls differ a little
    assert abs(rows[0].size - sum(sizes)) < 0.05 * sum(sizes) and rows[0].size > 1.5 * max(sizes)
    ids = [m.id for m in openai.OpenAI(base_url=daemon.http + "/v1", api_key="x").models.list().data]
    assert len(ids) == len(set(ids)) and "smollm2" in ids


def _blob_dir(d: DaemonProc) -> Path:
    return Path(d.env["HF_HUB_CACHE"]) / "models--omg--uploads" / "blobs"


def test_blobs_make_a_model_that_survives_a_restart(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"HF_HUB_CACHE": str(tmp_path / "hf"), "OMG_CONTEXT_LENGTH": "256"}).start()
    try:
        client = ollama.Client(host=d.http, timeout=120)
        digest = "sha256:" + hashlib.sha256(gguf_path.read_bytes()).hexdigest()
        assert httpx.head(f"{d.http}/api/blobs/{digest}").status_code == 404
        assert client.create_blob(gguf_path) == digest
        assert httpx.head(f"{d.http}/api/blobs/{digest}").status_code == 200
        # Bytes that do not hash to the digest named: 400, and nothing is kept.
        wrong = "sha256:" + "ab" * 32
        r = httpx.post(f"{d.http}/api/blobs/{wrong}", content=b"GGUF and more")
        assert r.status_code == 400 and "nothing was kept" in r.json()["error"]
        assert httpx.head(f"{d.http}/api/blobs/{wrong}").status_code == 404
        assert sorted(p.name for p in _blob_dir(d).iterdir()) == [digest.removeprefix("sha256:")]
        assert httpx.head(f"{d.http}/api/blobs/sha256:short").status_code == 400
        # A blob that is not a GGUF is refused when a model is made of it.
        junk = b"not a model at all"
        junk_digest = "sha256:" + hashlib.sha256(junk).hexdigest()
        assert httpx.post(f"{d.http}/api/blobs/{junk_digest}", content=junk).status_code == 201
        with pytest.raises(ollama.ResponseError) as e:
            client.create(model="junk", files={"junk.gguf": junk_digest})
        assert e.value.status_code == 400 and "'files'" in e.value.error and "GGUF" in e.value.error
        # A valid GGUF: a model in the store, streamed progress as ollama gives it.
        statuses = [p.status for p in client.create(model="up", files={"model.gguf": digest}, system=SYSTEM,
                                                    parameters={"num_predict": 3}, stream=True)]
        assert statuses[0] == "parsing GGUF" and statuses[-1] == "success"
        assert client.show("up").modelfile.startswith("FROM model.gguf\n")
        info = d.omg("model", "info", "up").stdout
        assert "uploaded" in info and "made from     an uploaded file" in info
        assert client.generate(model="up", prompt="Hi").eval_count == 3
        # Embed: truncate (the default) fits a long input into the 256-token window; false refuses it.
        long_text = "word " * 400
        assert len(client.embed(model="up", input=long_text).embeddings[0]) == 576
        with pytest.raises(ollama.ResponseError) as e:
            client.embed(model="up", input=long_text, truncate=False)
        assert e.value.status_code == 400 and "context window" in e.value.error
        # A model made from the added one; the base removed: the derived one keeps the files.
        assert d.omg("model", "add", str(gguf_path), "--name", "base").returncode == 0
        client.create(model="kid", from_="base", parameters={"num_predict": 2})
        client.copy("kid", "kid-copy")
        client.delete("base")
        d.stop()
        d.start()
        # Everything survives a restart (the index holds what each model adds), and the model
        # made from the removed base still works.
        assert _show(d, "up")["system"] == SYSTEM and "num_predict" in client.show("kid-copy").parameters
        assert client.generate(model="kid", prompt="Hi").eval_count == 2
        assert json.loads(d.omg("model", "verify", "--json").stdout or "{}").get("checks")
        # The blob goes with the last model made from it; gc takes an unused upload.
        client.delete("up")
        assert httpx.head(f"{d.http}/api/blobs/{digest}").status_code == 404
        assert d.omg("model", "gc").returncode == 0
        assert httpx.head(f"{d.http}/api/blobs/{junk_digest}").status_code == 404
    finally:
        d.stop()
