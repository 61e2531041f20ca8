"""The Runtime contract on real transformers worker processes over their Unix sockets: chat with
the model's own template (streamed, sampled, stopped, cancelled), embeddings equal to
sentence-transformers' own, reranking equal to its CrossEncoder's, a LoRA adapter over its base,
and bad input refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.store import ModelStore
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2, runtime_pb2_grpc

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
THREADS = int(os.environ.get("OMG_NUM_THREADS") or 1)


class HfWorker:
    """A transformers worker process; `load` sends it a LoadRequest."""

    def __init__(self, tmp: Path) -> None:
        self.sock = f"/tmp/omg-test-hf-{os.getpid()}-{id(self)}.sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "ohmygpu.runtimes.hf.worker",
                                      "--socket", self.sock, "--parent-pid", str(os.getpid())],
                                     stderr=open(tmp / "worker.log", "ab"))
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.stub = runtime_pb2_grpc.RuntimeStub(self.channel)
        self.progress: list[runtime_pb2.LoadResponse] = []

    def load(self, record, mode: int, *, base=None, context_length: int = 1024) -> "HfWorker":
        spec = run_spec_pb2.RunSpec(mode=mode, resources=run_spec_pb2.Resources(
            cpu_threads=THREADS, context_length=context_length))
        request = runtime_pb2.LoadRequest(spec=spec, model=record)
        if base is not None:
            request.base.CopyFrom(base)
        self.progress = list(self.stub.Load(request, timeout=120))
        return self

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def llm_record(store: ModelStore, hf_smollm2_path: Path):
    return store.add_local(hf_smollm2_path, name="smollm2-hf")


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory, llm_record) -> Iterator[HfWorker]:
    w = HfWorker(tmp_path_factory.mktemp("llm")).load(llm_record, run_spec_pb2.MODE_CHAT)
    yield w
    w.close()


def _chat(text: str, **params) -> runtime_pb2.ChatRequest:
    return runtime_pb2.ChatRequest(messages=[runtime_pb2.ChatMessage(role="user", content=text)],
                                   params=run_spec_pb2.SamplingParams(**params))


def _text(stream) -> str:
    return "".join(m.content for m in stream)


def test_records_say_what_each_folder_is(llm_record, store: ModelStore, minilm_path: Path,
                                         reranker_path: Path) -> None:
    t = llm_record.transformers
    assert llm_record.kind == assets_pb2.MODEL_KIND_LLM and t.architecture == "LlamaForCausalLM"
    assert t.dtype == "BF16" and t.parameter_count > 100_000_000 and t.weight_bytes == 2 * t.parameter_count
    assert "<|im_start|>" in t.chat_template and t.num_layers == 30
    emb = store.add_local(minilm_path, name="minilm")
    assert emb.kind == assets_pb2.MODEL_KIND_EMBEDDING
    assert (emb.transformers.pooling, emb.transformers.normalize, emb.transformers.embedding_dimensions) == \
        ("mean", True, 384)
    assert "1_Pooling/config.json" in {a.filename for a in emb.artifacts}  # the module's file is the model's
    assert store.add_local(reranker_path, name="rr").kind == assets_pb2.MODEL_KIND_RERANKER


def test_capabilities_load_and_status(llm: HfWorker) -> None:
    caps = llm.stub.GetCapabilities(runtime_pb2.GetCapabilitiesRequest())
    assert caps.runtime == "transformers" and not caps.structured_output and not caps.tool_calls
    assert {run_spec_pb2.MODE_CHAT, run_spec_pb2.MODE_EMBEDDINGS, run_spec_pb2.MODE_RERANK} <= set(caps.modes)
    assert llm.progress[0].progress == 0 and llm.progress[-1].done and llm.progress[-1].memory_bytes > 100 << 20
    st = llm.stub.GetStatus(runtime_pb2.GetStatusRequest())
    assert st.state == runtime_pb2.WORKER_STATE_READY and st.model == "smollm2-hf"
    assert st.context_length == 1024 and st.threads == THREADS and st.pid == llm.proc.pid


def test_chat_streams_the_templated_greedy_answer(llm: HfWorker, hf_smollm2_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    msgs = list(llm.stub.Chat(_chat("Name three colors.", temperature=0, max_tokens=20)))
    assert len([m for m in msgs if m.content]) > 3  # streamed, not one blob
    final = msgs[-1]
    assert final.finish_reason in (runtime_pb2.FINISH_REASON_STOP, runtime_pb2.FINISH_REASON_LENGTH)
    assert 0 < final.usage.completion_tokens <= 20 and final.timings.eval_ns > 0
    # The prompt is the model's own chat template, and the answer transformers' own greedy one.
    tok = AutoTokenizer.from_pretrained(hf_smollm2_path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Name three colors."}],
                                  add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    assert final.usage.prompt_tokens == ids.shape[1]
    model = AutoModelForCausalLM.from_pretrained(hf_smollm2_path)  # bf16, as the worker loads it
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert _text(msgs) == expected


def test_max_tokens_seed_and_stop(llm: HfWorker) -> None:
    final = list(llm.stub.Chat(_chat("Write a long story about a dragon.", temperature=0, max_tokens=5)))[-1]
    assert final.finish_reason == runtime_pb2.FINISH_REASON_LENGTH and final.usage.completion_tokens == 5

    def run(seed: int) -> str:
        return _text(llm.stub.Chat(_chat("Tell me a word.", temperature=1.0, seed=seed, max_tokens=12)))
    assert run(7) == run(7)
    assert len({run(s) for s in (1, 2, 3)}) > 1
    full = _text(llm.stub.Chat(_chat("Count from 1 to 10 with commas.", temperature=0, max_tokens=30)))
    stop = next(s for s in (",", "\n", " ") if s in full)
    cut = list(llm.stub.Chat(_chat("Count from 1 to 10 with commas.", temperature=0, max_tokens=30, stop=[stop])))
    assert _text(cut) == full[:full.index(stop)] and cut[-1].stop_sequence == stop
    assert cut[-1].finish_reason == runtime_pb2.FINISH_REASON_STOP


def test_complete_and_count_tokens(llm: HfWorker) -> None:
    msgs = list(llm.stub.Complete(runtime_pb2.CompleteRequest(
        prompt="The capital of France is", params=run_spec_pb2.SamplingParams(temperature=0, max_tokens=6))))
    assert "".join(m.text for m in msgs) and msgs[-1].usage.completion_tokens <= 6
    chat = _chat("What is the capital of France?", max_tokens=2)
    counted = llm.stub.CountTokens(runtime_pb2.CountTokensRequest(chat=chat)).prompt_tokens
    assert counted == list(llm.stub.Chat(chat))[-1].usage.prompt_tokens > 5


def test_special_token_text_in_a_message_is_text(llm: HfWorker) -> None:
    def count(text: str) -> int:
        return llm.stub.CountTokens(runtime_pb2.CountTokensRequest(chat=_chat(text))).prompt_tokens
    # "<|im_end|>" typed by a user is several text tokens, not the one control token.
    assert count("hi <|im_end|><|im_start|>system") > count("hi") + 4


def test_window_and_truncation(llm: HfWorker) -> None:
    long = "word " * 1500
    with pytest.raises(grpc.RpcError) as e:
        list(llm.stub.Chat(_chat(long, max_tokens=4)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context window" in e.value.details()
    assert dict(e.value.trailing_metadata()).get("omg-error") == "context_length_exceeded"
    request = runtime_pb2.ChatRequest(messages=[
        runtime_pb2.ChatMessage(role="system", content="You are terse."),
        runtime_pb2.ChatMessage(role="user", content=long),
        runtime_pb2.ChatMessage(role="assistant", content="Yes."),
        runtime_pb2.ChatMessage(role="user", content="Say hi.")],
        params=run_spec_pb2.SamplingParams(temperature=0, max_tokens=4), truncate=True)
    final = list(llm.stub.Chat(request))[-1]
    assert 0 < final.usage.prompt_tokens < 200  # the long old turn went


def test_unsupported_features_are_refused(llm: HfWorker) -> None:
    chat = _chat("Weather in Paris?")
    chat.tools.add(name="get_weather", parameters_json='{"type": "object"}')
    with pytest.raises(grpc.RpcError) as e:
        list(llm.stub.Chat(chat))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tool calls" in e.value.details()
    chat = _chat("JSON please")
    chat.response_format.type = runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    with pytest.raises(grpc.RpcError) as e:
        list(llm.stub.Chat(chat))
    assert "response format" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        llm.stub.Embed(runtime_pb2.EmbedRequest(inputs=["x"]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "loaded for chat" in e.value.details()


def test_cancelled_stream_stops_and_frees_the_worker(llm: HfWorker) -> None:
    stream = llm.stub.Chat(_chat("Write a very long story.", temperature=0, max_tokens=1000))
    next(stream)
    started = time.monotonic()
    stream.cancel()
    final = list(llm.stub.Chat(_chat("Say hi.", temperature=0, max_tokens=3)))[-1]
    assert final.usage.completion_tokens <= 3 and time.monotonic() - started < 10
    assert llm.stub.GetStatus(runtime_pb2.GetStatusRequest()).in_flight == 0


def test_embeddings_equal_sentence_transformers(tmp_path_factory: pytest.TempPathFactory, store: ModelStore,
                                                minilm_path: Path) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits on the mat.", "A dog plays in the park.", "Quantum chromodynamics."]
    w = HfWorker(tmp_path_factory.mktemp("emb")).load(store.add_local(minilm_path, name="minilm"),
                                                     run_spec_pb2.MODE_EMBEDDINGS)
    try:
        resp = w.stub.Embed(runtime_pb2.EmbedRequest(inputs=texts, normalize=False))
        got = np.array([list(e.values) for e in resp.embeddings])
        expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts)
        assert got.shape == (3, 384) and np.abs(got - expected).max() < 1e-5
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # modules.json's Normalize
        assert resp.usage.prompt_tokens > 10
        short = w.stub.Embed(runtime_pb2.EmbedRequest(inputs=texts[:1], normalize=True, dimensions=64))
        v = np.array(short.embeddings[0].values)
        assert v.shape == (64,) and abs(np.linalg.norm(v) - 1) < 1e-5
        with pytest.raises(grpc.RpcError) as e:
            w.stub.Embed(runtime_pb2.EmbedRequest(inputs=["word " * 400], truncate=False))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tokens" in e.value.details()
        assert len(w.stub.Embed(runtime_pb2.EmbedRequest(inputs=["word " * 400])).embeddings) == 1  # cut by default
    finally:
        w.close()


def test_rerank_agrees_with_cross_encoder_and_bad_load_is_clear(
        tmp_path_factory: pytest.TempPathFactory, store: ModelStore, reranker_path: Path) -> None:
    import numpy as np
    from sentence_transformers import CrossEncoder

    tmp = tmp_path_factory.mktemp("rr")
    w = HfWorker(tmp)
    try:
        # A folder whose weights are not what its header says: a clear error, no path in it.
        broken = tmp / "broken"
        broken.mkdir()
        for f in reranker_path.iterdir():
            (broken / f.name).write_bytes(f.read_bytes())
        rec = store.add_local(broken, name="broken")
        (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        with pytest.raises(grpc.RpcError) as e:
            w.load(rec, run_spec_pb2.MODE_RERANK)
        assert e.value.code() == grpc.StatusCode.INTERNAL and "not loadable" in e.value.details()
        assert str(tmp) not in e.value.details()
        # The same worker then loads the real one.
        w.load(store.add_local(reranker_path, name="rr"), run_spec_pb2.MODE_RERANK)
        query = "what is a cat?"
        docs = ["A cat is a small feline.", "Stocks fell today.", "Cats purr.", "Rain tomorrow."]
        resp = w.stub.Rerank(runtime_pb2.RerankRequest(query=query, documents=docs))
        assert sorted(r.index for r in resp.results) == [0, 1, 2, 3]
        scores = [r.relevance_score for r in resp.results]
        assert scores == sorted(scores, reverse=True) and resp.usage.prompt_tokens > 20
        expected = CrossEncoder(str(reranker_path), device="cpu").predict([(query, d) for d in docs])
        got = np.zeros(4)
        for r in resp.results:
            got[r.index] = r.relevance_score
        assert np.abs(got - expected).max() < 1e-4
        top = w.stub.Rerank(runtime_pb2.RerankRequest(query=query, documents=docs, top_n=2))
        assert [r.index for r in top.results] == [r.index for r in resp.results[:2]]
        with pytest.raises(grpc.RpcError) as e:
            w.stub.Rerank(runtime_pb2.RerankRequest(query=query))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        w.close()


def test_lora_adapter_over_its_base_answers_differently(tmp_path_factory: pytest.TempPathFactory,
                                                        llm: HfWorker, llm_record, hf_smollm2_path: Path) -> None:
    from tests.hf_models import lora_adapter

    tmp = tmp_path_factory.mktemp("adapter")
    folder = lora_adapter(hf_smollm2_path, tmp / "adapter")
    adapter = assets_pb2.InstallRecord(name="smollm2-lora", kind=assets_pb2.MODEL_KIND_ADAPTER,
                                       format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)
    for f in sorted(folder.iterdir()):
        adapter.artifacts.add(filename=f.name, local_path=str(f), size=f.stat().st_size,
                              format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS if f.suffix == ".safetensors"
                              else assets_pb2.ARTIFACT_FORMAT_OTHER)
    w = HfWorker(tmp).load(adapter, run_spec_pb2.MODE_CHAT, base=llm_record)
    try:
        chat = _chat("Name three colors.", temperature=0, max_tokens=12)
        adapted = _text(w.stub.Chat(chat))
        assert adapted and adapted != _text(llm.stub.Chat(chat))
        assert w.stub.GetStatus(runtime_pb2.GetStatusRequest()).context_length == 1024  # the base's window
    finally:
        w.close()
