"""What a model is (its kind) and which file a runtime loads, told from its files.

GGUF models say it in their header (see store.kind_of); CTranslate2 models in the spec name
at the start of model.bin ("WhisperSpec"); transformers models in config.json's
`architectures`. Every API checks the kind before it queues a request, so chatting with a
whisper model or transcribing with an LLM is a clear 400, not a worker error.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.core.speech_files import find_speech

_MAX_SPEC_NAME = 256
_MAX_CONFIG = 4 << 20

KIND_NAMES = {
    assets_pb2.MODEL_KIND_UNSPECIFIED: "unknown",
    assets_pb2.MODEL_KIND_LLM: "llm",
    assets_pb2.MODEL_KIND_EMBEDDING: "embedding",
    assets_pb2.MODEL_KIND_WHISPER: "whisper",
    assets_pb2.MODEL_KIND_IMAGE: "image",
    assets_pb2.MODEL_KIND_TTS: "tts",
    assets_pb2.MODEL_KIND_RERANKER: "reranker",
    assets_pb2.MODEL_KIND_ADAPTER: "adapter",
}


def kind_name(kind: int) -> str:
    """"llm", "embedding", "whisper", ... for a ModelKind value."""
    return KIND_NAMES.get(kind, "unknown")


def ct2_spec_name(model_bin: Path) -> str:
    """The model spec a CTranslate2 model.bin was saved from ("WhisperSpec"); raises
    InvalidModelFile for a file that is not one. Reads a few bytes, never the weights."""
    try:
        with open(model_bin, "rb") as f:
            head = f.read(6 + _MAX_SPEC_NAME)
    except OSError as e:
        raise InvalidModelFile(f"cannot read {model_bin.name}: {e.strerror}") from None
    if len(head) < 6:
        raise InvalidModelFile(f"{model_bin.name} is not a CTranslate2 model (too short)")
    version, = struct.unpack_from("<I", head, 0)
    if not 1 <= version <= 64:
        raise InvalidModelFile(f"{model_bin.name} is not a CTranslate2 model (binary version {version})")
    if version < 2:
        return ""  # version 1 files carry no spec name
    length, = struct.unpack_from("<H", head, 4)
    if not 0 < length <= _MAX_SPEC_NAME or 6 + length > len(head):
        raise InvalidModelFile(f"{model_bin.name} is not a CTranslate2 model (bad spec name)")
    return head[6:6 + length].rstrip(b"\0").decode("ascii", errors="replace")


def kind_of_ct2(spec_name: str) -> int:
    """The kind of a CTranslate2 model from its spec name."""
    if spec_name.startswith("Whisper"):
        return assets_pb2.MODEL_KIND_WHISPER
    if "Encoder" in spec_name and "Decoder" not in spec_name:
        return assets_pb2.MODEL_KIND_EMBEDDING
    if spec_name:
        return assets_pb2.MODEL_KIND_LLM
    return assets_pb2.MODEL_KIND_UNSPECIFIED


def kind_of_architectures(architectures: list[str]) -> int:
    """The kind of a transformers model from config.json's `architectures`."""
    for arch in architectures:
        if arch.startswith("Whisper"):
            return assets_pb2.MODEL_KIND_WHISPER
        if arch.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")):
            return assets_pb2.MODEL_KIND_LLM
        if arch.endswith(("Model", "ForMaskedLM")) and any(
                k in arch for k in ("Bert", "Roberta", "MPNet", "Nomic", "E5", "Gte", "XLM")):
            return assets_pb2.MODEL_KIND_EMBEDDING
        if "Diffusion" in arch or arch.endswith("UNet2DConditionModel"):
            return assets_pb2.MODEL_KIND_IMAGE
    return assets_pb2.MODEL_KIND_UNSPECIFIED


def read_architectures(config_json: Path) -> list[str]:
    """config.json's `architectures`, or [] when it has none or is not JSON."""
    try:
        if config_json.stat().st_size > _MAX_CONFIG:
            return []
        data = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    archs = data.get("architectures") if isinstance(data, dict) else None
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


def classify_files(files: dict[str, Path]) -> tuple[int, int, str]:
    """(kind, main ArtifactFormat, main file name) of a model made of `files` (name in the repo ->
    local path). GGUF models are not handled here (their header decides)."""
    speech = find_speech(files)  # a Piper voice or a Kokoro folder (core/speech_files.py)
    if speech is not None:
        return assets_pb2.MODEL_KIND_TTS, assets_pb2.ARTIFACT_FORMAT_ONNX, speech[0]
    ct2 = next((n for n in files if n.rsplit("/", 1)[-1] == "model.bin"), "")
    if ct2 and any(n.rsplit("/", 1)[-1] == "config.json" for n in files):
        return kind_of_ct2(ct2_spec_name(files[ct2])), assets_pb2.ARTIFACT_FORMAT_CT2, ct2
    weights = sorted(n for n in files if n.endswith(".safetensors"))
    if weights:
        config = files.get("config.json")
        kind = kind_of_architectures(read_architectures(config)) if config else assets_pb2.MODEL_KIND_UNSPECIFIED
        return kind, assets_pb2.ARTIFACT_FORMAT_SAFETENSORS, weights[0]
    return assets_pb2.MODEL_KIND_UNSPECIFIED, assets_pb2.ARTIFACT_FORMAT_UNSPECIFIED, ""


def format_of(path: str) -> int:
    """The ArtifactFormat of one file, from its name."""
    lower = path.lower()
    if lower.endswith(".gguf"):
        return assets_pb2.ARTIFACT_FORMAT_GGUF
    if lower.endswith(".safetensors"):
        return assets_pb2.ARTIFACT_FORMAT_SAFETENSORS
    if lower.endswith(".onnx"):
        return assets_pb2.ARTIFACT_FORMAT_ONNX
    if lower.rsplit("/", 1)[-1] == "model.bin":
        return assets_pb2.ARTIFACT_FORMAT_CT2
    return assets_pb2.ARTIFACT_FORMAT_OTHER
