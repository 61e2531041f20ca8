"""What a Hugging Face format folder is, told from its config files and safetensors headers
(core/transformers_info.py), the estimate made from that, and what the transformers runtime
refuses (core/capabilities.refusal); small synthetic folders, no torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import capabilities
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.core.estimate import context_window, estimate
from ohmygpu.core.store import ModelStore
from ohmygpu.core.transformers_info import describe, module_files
from ohmygpu.run.v1 import run_spec_pb2


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    widths = {"F32": 4, "BF16": 2, "F16": 2}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = widths[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def _folder(tmp: Path, config: dict, tensors: dict | None = None, **files: object) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config))
    _safetensors(tmp / "model.safetensors", tensors or {"w": ("BF16", [64, 32]), "b": ("F32", [8])})
    for name, content in files.items():
        p = tmp / name.replace("__", "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content if isinstance(content, str) else json.dumps(content))
    return tmp


def _describe(folder: Path) -> tuple[int, assets_pb2.TransformersInfo]:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    out = describe(folder, files)
    assert out is not None
    return out


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 4096,
         "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2}


def test_causal_lm_from_config_and_headers(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "llm", LLAMA, **{"tokenizer_config.json": {"chat_template": "{{ messages }}"}})
    kind, info = _describe(folder)
    assert kind == assets_pb2.MODEL_KIND_LLM
    assert (info.architecture, info.model_type, info.context_length) == ("LlamaForCausalLM", "llama", 4096)
    assert (info.hidden_size, info.num_layers, info.num_heads, info.num_kv_heads) == (512, 8, 8, 2)
    assert info.parameter_count == 64 * 32 + 8 and info.weight_bytes == 64 * 32 * 2 + 8 * 4
    assert info.dtype == "BF16" and info.chat_template == "{{ messages }}"
    (folder / "chat_template.jinja").write_text("{{ 'jinja file' }}")  # transformers 4.43+ saves it apart
    assert _describe(folder)[1].chat_template == "{{ 'jinja file' }}"


def test_sentence_transformers_pooling_and_normalize(tmp_path: Path) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    folder = _folder(tmp_path / "st", {"architectures": ["BertModel"], "hidden_size": 384},
                     **{"modules.json": modules, "1_Pooling__config.json": pooling})
    kind, info = _describe(folder)
    assert kind == assets_pb2.MODEL_KIND_EMBEDDING and info.sentence_transformers
    assert (info.pooling, info.normalize, info.embedding_dimensions) == ("cls", True, 384)
    assert set(module_files(folder)) == {"1_Pooling/config.json"}


def test_module_paths_cannot_leave_the_folder(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("x")
    folder = _folder(tmp_path / "st", {"architectures": ["BertModel"]})
    (folder / "modules.json").write_text(json.dumps([
        {"path": "../outside", "type": "sentence_transformers.models.Pooling"},
        {"path": "/etc", "type": "sentence_transformers.models.Pooling"}]))
    assert module_files(folder) == {}


@pytest.mark.parametrize("config, extra", [
    ({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}, {}),
    ({"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1}, {}),
    ({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"}},
     {"config_sentence_transformers.json": {"model_type": "CrossEncoder"}}),  # sentence-transformers says so
])
def test_cross_encoders_are_rerankers(tmp_path: Path, config: dict, extra: dict) -> None:
    assert _describe(_folder(tmp_path / "rr", config, **extra))[0] == assets_pb2.MODEL_KIND_RERANKER


def test_a_classifier_of_several_labels_is_not_a_reranker(tmp_path: Path) -> None:
    config = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "neg", "1": "pos"}}
    assert _describe(_folder(tmp_path / "clf", config))[0] == assets_pb2.MODEL_KIND_UNSPECIFIED


def test_malformed_configs_give_defaults_and_a_bad_header_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "bad", {})
    (folder / "config.json").write_text("[not an object")
    kind, info = _describe(folder)
    assert kind == assets_pb2.MODEL_KIND_UNSPECIFIED and info.parameter_count == 64 * 32 + 8
    (folder / "config.json").write_text(json.dumps({**LLAMA, "hidden_size": "huge", "num_hidden_layers": -3}))
    assert _describe(folder)[1].hidden_size == 0 and _describe(folder)[1].num_layers == 0
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(InvalidModelFile):
        _describe(folder)


def test_store_records_a_folder_and_the_estimate_uses_its_headers(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "llm", LLAMA, tensors={"w": ("BF16", [1024, 1024])})
    record = ModelStore(tmp_path / "home").add_local(folder, name="llm")
    assert record.kind == assets_pb2.MODEL_KIND_LLM and record.HasField("transformers")
    assert context_window(record, 0) == 4096 and context_window(record, 100_000) == 4096
    est = estimate(record, context_length=1024)
    assert est.weights == 2 << 20
    # K and V for 8 layers x 1024 tokens x 2 KV heads x 64 dims, in bf16.
    assert est.kv_cache == 2 * 8 * 1024 * 2 * 64 * 2
    assert estimate(record, context_length=2048).kv_cache == 2 * est.kv_cache
    emb = estimate(record, context_length=1024, mode=run_spec_pb2.MODE_EMBEDDINGS)
    assert emb.kv_cache == 0 and emb.weights == est.weights


def test_capabilities_and_refusals_of_transformers_models(tmp_path: Path) -> None:
    llm = assets_pb2.InstallRecord(name="m", kind=assets_pb2.MODEL_KIND_LLM,
                                   format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,
                                   transformers=assets_pb2.TransformersInfo(chat_template="{{ tools }}"))
    assert capabilities.capabilities(llm) == ["completion"]  # tools in the template, but no parser
    emb = assets_pb2.InstallRecord(kind=assets_pb2.MODEL_KIND_EMBEDDING, format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,
                                   transformers=assets_pb2.TransformersInfo(architecture="BertModel"))
    assert capabilities.capabilities(emb) == ["embedding"]
    rr = assets_pb2.InstallRecord(kind=assets_pb2.MODEL_KIND_RERANKER, format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,
                                  transformers=assets_pb2.TransformersInfo(architecture="BertForSequence"))
    assert capabilities.capabilities(rr) == []
    assert capabilities.refusal(llm) is None
    message, param = capabilities.refusal(llm, tools=True)
    assert param == "tools" and "transformers runtime" in message and "tool calls" in message
    assert capabilities.refusal(llm, response_format=True)[1] == "response_format"
    assert capabilities.refusal(llm, logprobs=True)[1] == "logprobs"
    gguf = assets_pb2.InstallRecord(kind=assets_pb2.MODEL_KIND_LLM, format=assets_pb2.ARTIFACT_FORMAT_GGUF)
    assert capabilities.refusal(gguf, tools=True, response_format=True) is None  # llama.cpp has them
