"""The transformers runtime on a GPU, run where an NVIDIA GPU is lent (skipped elsewhere): a
Hugging Face format LLM placed on cuda by the daemon's estimate, answering there (its worker a GPU
process), a cross-encoder scoring on the GPU, and the VRAM given back when the workers stop.

The LLM is made from OMG_TEST_GGUF when set (scripts/gpu-check.sh gives the tiny random GGUF it
carries; scripts/hf_smollm2.py converts it, which needs the `gguf` wheel gpu-bundle.sh packs),
else it is the session's HF SmolLM2."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from ohmygpu.daemon.devices import probe
from ohmygpu.runtimes.api.registry import library_available, supports_gpu

from tests.helpers import built_once, load_script, new_daemon

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _need_gpu() -> None:
    if not probe().gpus:
        pytest.skip("no NVIDIA GPU on this machine")
    if not library_available("transformers") or not supports_gpu("transformers"):
        pytest.skip("transformers with a CUDA torch is not installed")


def _gpu_pids() -> set[int]:
    return {pid for g in probe().gpus for pid in g.processes}


@pytest.fixture
def hf_llm(tmp_path: Path) -> Path:
    source = os.environ.get("OMG_TEST_GGUF")
    if source:
        return load_script("hf_smollm2").build(tmp_path / "hf-llm", Path(source))
    return built_once(load_script("hf_smollm2").cached)


def _cross_encoder(tokenizer_from: Path, out: Path) -> Path:
    """A random BertForSequenceClassification (one label) using the LLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, num_labels=1, max_position_embeddings=512,
                        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                        architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(out)
    return out


def test_transformers_on_the_gpu_and_vram_freed(tmp_path: Path, hf_llm: Path) -> None:
    _need_gpu()
    reranker = _cross_encoder(hf_llm, tmp_path / "rr")
    d = new_daemon(tmp_path, extra_env={"OMG_CONTEXT_LENGTH": "1024"}).start()
    try:
        assert d.omg("model", "add", str(hf_llm), "--name", "hf").returncode == 0
        assert d.omg("model", "add", str(reranker), "--name", "rr").returncode == 0
        r = httpx.post(f"{d.http}/v1/chat/completions", timeout=300, json={
            "model": "hf", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1
        r = httpx.post(f"{d.http}/v1/rerank", timeout=300, json={
            "model": "rr", "query": "cats", "documents": ["a cat", "the stock market", "kittens"]})
        assert r.status_code == 200, r.text
        assert sorted(x["index"] for x in r.json()["results"]) == [0, 1, 2]
        loaded = {m["name"]: m for m in json.loads(d.omg("ps", "--json").stdout)["models"]}
        assert loaded["hf"]["device"].startswith("cuda:") and loaded["rr"]["device"].startswith("cuda:")
        pids = {int(loaded[n]["pid"]) for n in ("hf", "rr")}
        assert pids <= _gpu_pids()
        for name in ("hf", "rr"):
            assert httpx.post(f"{d.http}/v1/loaded/{name}:unload", json={}).json()["unloaded"] is True
        deadline = time.monotonic() + 15
        while pids & _gpu_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pids & _gpu_pids()  # the stopped workers hold no VRAM
    finally:
        d.stop()
