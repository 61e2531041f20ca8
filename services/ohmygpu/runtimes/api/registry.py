"""Runtime names -> where their worker lives and which extra installs it.

Like uvicorn's import strings: nothing here imports an inference library. The daemon checks
`find_spec` of the library before spawning, so a missing extra is a clear error, not a crash
of a worker that cannot start. What a runtime can do (a GPU in this build) is its worker's own
GetCapabilities answer, asked once in a child (`python -m <worker> --capabilities`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import subprocess
import sys
from dataclasses import dataclass

from google.protobuf import json_format
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.enums import enum_name
from ohmygpu.core.errors import InvalidArgument, MissingExtra
from ohmygpu.core.kinds import kind_name
from ohmygpu.runtime.v1 import runtime_pb2

log = logging.getLogger("ohmygpu.registry")
CAPABILITIES_TIMEOUT_S = 60.0  # importing a CUDA build of a library can take a while


@dataclass(frozen=True)
class RuntimeEntry:
    """How to start one runtime's worker."""

    name: str
    worker_module: str  # run as `python -m <worker_module>`
    extra: str  # pip extra that installs its library
    library: str  # top-level module the worker imports
    formats: tuple[int, ...]  # ArtifactFormat values it loads
    kinds: tuple[int, ...]  # ModelKind values it serves


RUNTIMES: dict[str, RuntimeEntry] = {
    "llamacpp": RuntimeEntry(
        name="llamacpp",
        worker_module="ohmygpu.runtimes.llamacpp.worker",
        extra="llamacpp",
        library="llama_cpp",
        formats=(assets_pb2.ARTIFACT_FORMAT_GGUF,),
        # An adapter in GGUF format: a GGUF LoRA over a GGUF base (made by a training job).
        kinds=(assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_EMBEDDING, assets_pb2.MODEL_KIND_UNSPECIFIED,
               assets_pb2.MODEL_KIND_ADAPTER),
    ),
    "whisper": RuntimeEntry(
        name="whisper",
        worker_module="ohmygpu.runtimes.whisper.worker",
        extra="whisper",
        library="faster_whisper",
        formats=(assets_pb2.ARTIFACT_FORMAT_CT2,),
        kinds=(assets_pb2.MODEL_KIND_WHISPER,),
    ),
    "sdcpp": RuntimeEntry(
        name="sdcpp",
        worker_module="ohmygpu.runtimes.sdcpp.worker",
        extra="images",
        library="stable_diffusion_cpp",
        formats=(assets_pb2.ARTIFACT_FORMAT_SAFETENSORS, assets_pb2.ARTIFACT_FORMAT_GGUF),
        kinds=(assets_pb2.MODEL_KIND_IMAGE,),
    ),
    "tts": RuntimeEntry(
        name="tts",
        worker_module="ohmygpu.runtimes.tts.worker",
        extra="tts",
        library="onnxruntime",
        formats=(assets_pb2.ARTIFACT_FORMAT_ONNX,),
        kinds=(assets_pb2.MODEL_KIND_TTS,),
    ),
    # Hugging Face format folders (config.json + safetensors): chat, embeddings, reranking, and
    # PEFT LoRA adapters over a base (LoadRequest.base). After sdcpp, which takes image checkpoints.
    "transformers": RuntimeEntry(
        name="transformers",
        worker_module="ohmygpu.runtimes.hf.worker",
        extra="transformers",
        library="transformers",
        formats=(assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,),
        kinds=(assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_EMBEDDING, assets_pb2.MODEL_KIND_RERANKER,
               assets_pb2.MODEL_KIND_ADAPTER),
    ),
    # Trains LoRA adapters (training jobs, daemon/training.py); serves no model, so no kind.
    "trainer": RuntimeEntry(
        name="trainer",
        worker_module="ohmygpu.runtimes.trainer.worker",
        extra="train",
        library="peft",
        formats=(assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,),
        kinds=(),
    ),
}


@functools.cache
def capabilities(name: str) -> runtime_pb2.GetCapabilitiesResponse | None:
    """Runtime `name`'s GetCapabilities, answered by its worker module in a child process, once
    per daemon (a broken CUDA library must not take the daemon down, nor a hung import stall
    it past CAPABILITIES_TIMEOUT_S); None when the worker cannot answer (its library missing)."""
    entry = RUNTIMES[name]
    try:
        out = subprocess.run([sys.executable, "-m", entry.worker_module, "--capabilities"],
                             capture_output=True, text=True, timeout=CAPABILITIES_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("runtime %s did not say what it can do: %s", name, e)
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        log.info("runtime %s did not say what it can do (exit %d): %s", name, out.returncode,
                 out.stderr.strip()[-300:])
        return None
    try:
        return json_format.Parse(lines[-1], runtime_pb2.GetCapabilitiesResponse(), ignore_unknown_fields=True)
    except json_format.ParseError as e:
        log.warning("runtime %s answered GetCapabilities with something else: %s", name, e)
        return None


def supports_gpu(name: str) -> bool:
    """Whether runtime `name`'s installed library was built with GPU support (a CPU-only
    llama-cpp-python wheel on a GPU machine must not be placed, or budgeted, on the GPU):
    its worker's GetCapabilities.gpu."""
    caps = capabilities(name)
    return caps is not None and caps.gpu


def library_available(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def runtime_for(record: assets_pb2.InstallRecord, *, preferred: str = "") -> RuntimeEntry:
    """The runtime that serves `record`; raises InvalidArgument or MissingExtra."""
    candidates = [RUNTIMES[preferred]] if preferred in RUNTIMES else list(RUNTIMES.values())
    if preferred and preferred not in RUNTIMES:
        raise InvalidArgument(f"unknown runtime '{preferred}'; known: {', '.join(RUNTIMES)}")
    for entry in candidates:
        if record.format in entry.formats and record.kind in entry.kinds:
            if not library_available(entry.library):
                raise MissingExtra(entry.name, entry.extra)
            return entry
    fmt = enum_name(assets_pb2.ArtifactFormat, record.format)
    raise InvalidArgument(f"no runtime of this version serves model '{record.name}' "
                          f"(a {kind_name(record.kind)} model in {fmt} format)")
