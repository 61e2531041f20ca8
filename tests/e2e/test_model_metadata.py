"""What the APIs say about a model: one digest, one FROM, and capabilities from what its
runtime can do, over real HTTP against a daemon that pulled from the fake hub.

Clients act on these fields: llm-ollama groups /api/tags entries by digest (one file under two
names is one model with an alias) and registers a chat model only when /api/show lists
`completion`; Open WebUI offers every /api/tags entry in its model picker."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, gguf_with_uint32, new_daemon

pytestmark = pytest.mark.slow

GGUF_REPO, EMBED_REPO, WHISPER_REPO = "test-org/smol-GGUF", "test-org/embed-GGUF", "test-org/whisper-ct2"
LLM = f"hf.co/{GGUF_REPO}:Q4_1"
# A CTranslate2 model.bin header ("WhisperSpec"): enough for the store to classify a pulled
# whisper repo; it is never loaded here.
FAKE_CT2 = b"\x06\x00\x00\x00\x0c\x00WhisperSpec\x00" + b"\0" * 64


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, whisper_path: Path) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("meta")
    llm, embed = gguf_path.read_bytes(), gguf_with_uint32(gguf_path, "llama.pooling_type", 1)
    # README.md first, as on the hub: a pulled record lists the repo's files in the hub's order.
    repos = [FakeRepo(GGUF_REPO, {"README.md": b"# smol\n", "smol.Q4_1.gguf": llm, "params.json": b"{}"}),
             FakeRepo(EMBED_REPO, {"README.md": b"# embed\n", "embed.Q4_1.gguf": embed}),
             FakeRepo(WHISPER_REPO, {"README.md": b"# whisper\n", "config.json": b"{}",
                                     "model.bin": FAKE_CT2, "vocabulary.txt": b"a\nb\n"})]
    with FakeHub(repos) as hub:
        d = new_daemon(tmp, extra_env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp / "hf"),
                                       "HF_HUB_DISABLE_XET": "1"}).start()
        try:
            r = httpx.post(f"{d.http}/api/pull", json={"model": LLM, "stream": False}, timeout=120)
            assert r.status_code == 200, r.text
            for source, name in ((f"hf.co/{EMBED_REPO}", "emb"), (WHISPER_REPO, "whisper-pulled")):
                pulled = d.omg("pull", source, "--name", name, "--quiet")
                assert pulled.returncode == 0, pulled.stderr
            for path, name in ((gguf_path, "smollm2"), (whisper_path, "whisper-local")):
                added = d.omg("model", "add", str(path), "--name", name)
                assert added.returncode == 0, added.stderr
            yield d
        finally:
            d.stop()


def _tags(d: DaemonProc) -> dict[str, dict]:
    # By store name: Ollama lists an untagged one as name:latest.
    return {m["name"].removesuffix(":latest"): m for m in httpx.get(f"{d.http}/api/tags", timeout=30).json()["models"]}


def _show(d: DaemonProc, name: str) -> dict:
    r = httpx.post(f"{d.http}/api/show", json={"model": name}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_one_digest_and_from_for_a_pulled_repo(meta: DaemonProc, gguf_path: Path) -> None:
    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    rec = json.loads(meta.omg("model", "info", LLM, "--json").stdout)
    assert rec["artifacts"][0]["filename"] == "README.md"  # what made artifacts[0] the wrong answer
    tags = _tags(meta)
    assert tags[LLM]["digest"] == sha
    # The same file added locally is the same model: one digest, so llm-ollama shows one model.
    assert tags["smollm2"]["digest"] == sha
    assert _show(meta, LLM)["modelfile"] == "FROM smol.Q4_1.gguf\n"
    chat = httpx.post(f"{meta.http}/api/chat", json={
        "model": LLM, "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 2}}, timeout=120)
    assert chat.status_code == 200, chat.text
    ps = {m["name"].removesuffix(":latest"): m for m in httpx.get(f"{meta.http}/api/ps", timeout=30).json()["models"]}
    assert ps[LLM]["digest"] == sha
    # The index compares by the same digest: copying onto a name that holds the same file is
    # the no-op ollama's copy is, not a conflict with "another model".
    r = httpx.post(f"{meta.http}/api/copy", json={"source": LLM, "destination": "smollm2"})
    assert r.status_code == 200, r.text
    # The embedding repo and the whisper repo: their weights, not their READMEs.
    emb = json.loads(meta.omg("model", "info", "emb", "--json").stdout)
    assert tags["emb"]["digest"] == next(a["sha256"] for a in emb["artifacts"]
                                         if a["filename"] == "embed.Q4_1.gguf").removeprefix("sha256:")
    assert _show(meta, "emb")["modelfile"] == "FROM embed.Q4_1.gguf\n"
    for whisper in ("whisper-pulled", "whisper-local"):
        assert _show(meta, whisper)["modelfile"] == "FROM model.bin\n"


def test_capabilities_follow_what_the_runtime_can_do(meta: DaemonProc) -> None:
    client = ollama.Client(host=meta.http)
    # SmolLM2's chat template has no tools: completion only, as ollama decides from the template.
    assert client.show("smollm2").capabilities == ["completion"]
    assert client.show(LLM).capabilities == ["completion"]
    assert client.show("emb").capabilities == ["embedding"]
    for whisper in ("whisper-pulled", "whisper-local"):
        assert client.show(whisper).capabilities == []  # no chat, no tools, no embedding
    # /api/tags lists what the Ollama API can run; whisper models are for the OpenAI audio route.
    names = {m.model.removesuffix(":latest") for m in client.list().models}
    assert {LLM, "smollm2", "emb"} <= names and not names & {"whisper-pulled", "whisper-local"}, names
    openai_ids = {m["id"] for m in httpx.get(f"{meta.http}/v1/models", timeout=30).json()["data"]}
    assert {"whisper-pulled", "whisper-local", "emb", "smollm2"} <= openai_ids


def test_alias_model_rpc(meta: DaemonProc) -> None:
    """/api/copy's RPC, over gRPC and its HTTP rule: another name, or ALREADY_EXISTS."""
    import grpc
    from ohmygpu.api.v1 import models_pb2, models_pb2_grpc

    with grpc.insecure_channel(meta.grpc_addr) as channel:
        stub = models_pb2_grpc.ModelServiceStub(channel)
        record = stub.AliasModel(models_pb2.AliasModelRequest(source="emb", destination="emb-copy"), timeout=30)
        assert record.name == "emb-copy" and record.kind == record.ref.kind != 0
        with pytest.raises(grpc.RpcError) as e:
            stub.AliasModel(models_pb2.AliasModelRequest(source="emb", destination="smollm2"), timeout=30)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and "already exists" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            stub.AliasModel(models_pb2.AliasModelRequest(source="missing", destination="x"), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    r = httpx.post(f"{meta.http}/v1/store/models:alias", json={"source": "emb", "destination": "emb-copy2"})
    assert r.status_code == 200 and r.json()["name"] == "emb-copy2", r.text
    assert _tags(meta)["emb-copy2"]["digest"] == _tags(meta)["emb"]["digest"]
    r = httpx.post(f"{meta.http}/api/copy", json={"source": "emb", "destination": "smollm2"})
    assert r.status_code == 409 and "error" in r.json(), r.text
