"""What a Hugging Face format (transformers) folder holds, read from its config files and the
safetensors headers, never from its weights: TransformersInfo and the model's kind.

- an LLM: config.json's architecture ends with ForCausalLM (or another generative head);
- a reranker: a cross-encoder, saved by sentence-transformers as one (its
  config_sentence_transformers.json says `"model_type": "CrossEncoder"`) or a
  `...ForSequenceClassification` with one label (one relevance logit);
- an embedding model: a sentence-transformers folder (modules.json), its pooling from the
  Pooling module's config and its normalisation from a Normalize module; or an encoder
  architecture (BertModel) the transformers worker mean-pools.

Files from anywhere may lie: every JSON file is read with a size bound and checked for shape, so a
malformed one gives defaults (or InvalidModelFile for weights), never an exception of another kind.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.kinds import kind_of_architectures
from ohmygpu.core.safetensors_header import _DTYPE_BYTES, read_header

_MAX_JSON = 4 << 20  # configs are a few KiB; tokenizer_config.json with a long template ~100 KiB
_MAX_MODULES = 16
_POOLING_MODES = (  # sentence-transformers Pooling config keys -> our name, in its own order
    ("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_max_tokens", "max"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken"),
)


def read_json(path: Path | None) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing, too large, or not an object."""
    if path is None:
        return {}
    try:
        if path.stat().st_size > _MAX_JSON:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31 else 0


def _modules(folder: Path, files: Mapping[str, Path]) -> list[dict[str, Any]]:
    """modules.json's entries (dicts with a `type` string), or [] for a folder without one."""
    path = files.get("modules.json") or (folder / "modules.json")
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON:
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    if not isinstance(data, list):
        return []
    return [m for m in data[:_MAX_MODULES] if isinstance(m, dict) and isinstance(m.get("type"), str)]


def module_files(folder: Path) -> dict[str, Path]:
    """The files of the sentence-transformers modules that live in subfolders of `folder`
    ("1_Pooling/config.json"), by their name in the model, so a record lists (and verifies)
    them too. A module path that leaves the folder is ignored."""
    out: dict[str, Path] = {}
    root = folder.resolve()
    for module in _modules(folder, {}):
        sub = module.get("path")
        if not isinstance(sub, str) or not sub or sub.startswith(("/", "\\")) or ".." in sub.split("/"):
            continue
        d = folder / sub
        try:
            if not d.is_dir() or not d.resolve().is_relative_to(root):
                continue
            for p in sorted(d.iterdir())[:32]:
                if p.is_file() and not p.is_symlink() and not p.name.startswith("."):
                    out[f"{sub}/{p.name}"] = p
        except OSError:
            continue
    return out


def _chat_template(folder: Path, files: Mapping[str, Path]) -> str:
    """The tokenizer's chat template: chat_template.jinja (transformers 4.43+ saves it apart),
    else tokenizer_config.json's `chat_template` (a string, or a list of named ones: "default")."""
    path = files.get("chat_template.jinja") or (folder / "chat_template.jinja")
    try:
        if path.is_file() and path.stat().st_size <= _MAX_JSON:
            return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    value = read_json(files.get("tokenizer_config.json") or folder / "tokenizer_config.json").get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), "")
        return chosen if isinstance(chosen, str) else ""
    return ""


def _is_reranker(config: dict[str, Any], architecture: str, st_config: dict[str, Any]) -> bool:
    if st_config.get("model_type") == "CrossEncoder":
        return True
    if not architecture.endswith("ForSequenceClassification"):
        return False
    labels = config.get("id2label")
    n = _int(config.get("num_labels")) or (len(labels) if isinstance(labels, dict) else 0)
    return n == 1


def describe(folder: Path, files: Mapping[str, Path]) -> tuple[int, assets_pb2.TransformersInfo] | None:
    """(kind, info) of the transformers model in `folder` whose files are `files` (name in the
    model -> local path), or None when it has no config.json or no safetensors weights. Reads
    the configs and the safetensors headers (InvalidModelFile for a malformed header)."""
    config_path = files.get("config.json")
    weights = sorted(n for n in files if n.endswith(".safetensors") and "/" not in n)
    if config_path is None or not weights:
        return None
    config = read_json(config_path)
    archs = config.get("architectures")
    architectures = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    info = assets_pb2.TransformersInfo(
        architecture=architectures[0] if architectures else "",
        model_type=config.get("model_type") if isinstance(config.get("model_type"), str) else "",
        context_length=_int(text.get("max_position_embeddings")) or _int(text.get("n_positions")),
        hidden_size=_int(text.get("hidden_size")) or _int(text.get("n_embd")),
        num_layers=_int(text.get("num_hidden_layers")) or _int(text.get("n_layer")),
        num_heads=_int(text.get("num_attention_heads")) or _int(text.get("n_head")),
        chat_template=_chat_template(folder, files),
    )
    info.num_kv_heads = _int(text.get("num_key_value_heads")) or info.num_heads
    dtypes: collections.Counter[str] = collections.Counter()
    for name in weights:
        for entry in read_header(files[name]).values():
            count = entry.count
            info.parameter_count += count
            dtypes[entry.dtype] += count
            info.weight_bytes += count * _DTYPE_BYTES.get(entry.dtype, 4)
    info.dtype = dtypes.most_common(1)[0][0] if dtypes else ""
    st_config = read_json(files.get("config_sentence_transformers.json")
                          or folder / "config_sentence_transformers.json")
    modules = _modules(folder, files)
    if _is_reranker(config, info.architecture, st_config):
        return assets_pb2.MODEL_KIND_RERANKER, info
    if modules:
        info.sentence_transformers = True
        info.embedding_dimensions = info.hidden_size
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            if kind == "Normalize":
                info.normalize = True
            elif kind == "Pooling" and isinstance(module.get("path"), str):
                pooling = read_json(folder / module["path"] / "config.json")
                info.pooling = next((ours for key, ours in _POOLING_MODES if pooling.get(key) is True), "mean")
                info.embedding_dimensions = _int(pooling.get("word_embedding_dimension")) or info.hidden_size
            elif kind == "Dense" and isinstance(module.get("path"), str):
                dense = read_json(folder / module["path"] / "config.json")
                info.embedding_dimensions = _int(dense.get("out_features")) or info.embedding_dimensions
        return assets_pb2.MODEL_KIND_EMBEDDING, info
    kind = kind_of_architectures(architectures)
    if kind == assets_pb2.MODEL_KIND_EMBEDDING:
        info.pooling, info.embedding_dimensions = "mean", info.hidden_size
    return kind, info


def weights_bytes(info: assets_pb2.TransformersInfo, load_dtype_bytes: int) -> int:
    """Bytes the weights take once loaded as `load_dtype_bytes`-byte floats (the worker loads
    bf16/f16 checkpoints as float32 on the CPU, as stored on a GPU)."""
    return info.parameter_count * load_dtype_bytes if info.parameter_count else info.weight_bytes


def fill_record(record: assets_pb2.InstallRecord, folder: Path, files: Mapping[str, Path]) -> None:
    """Set `record`'s kind and TransformersInfo when it is a transformers folder (safetensors
    weights beside a config.json); leaves any other record as it is."""
    if record.format != assets_pb2.ARTIFACT_FORMAT_SAFETENSORS or record.kind == assets_pb2.MODEL_KIND_IMAGE:
        return
    described = describe(folder, files)
    if described is not None:
        record.kind = described[0]
        record.transformers.CopyFrom(described[1])
