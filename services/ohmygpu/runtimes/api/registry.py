"""Runtime names -> where their worker lives and which extra installs it.

Like uvicorn's import strings: nothing here imports an inference library. The daemon checks
`find_spec` of the library before spawning, so a missing extra is a clear error, not a crash
of a worker that cannot start.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from dataclasses import dataclass

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.enums import enum_name
from ohmygpu.core.errors import InvalidArgument, MissingExtra
from ohmygpu.core.kinds import kind_name


@dataclass(frozen=True)
class RuntimeEntry:
    """How to start one runtime's worker."""

    name: str
    worker_module: str  # run as `python -m <worker_module>`
    extra: str  # pip extra that installs its library
    library: str  # top-level module the worker imports
    formats: tuple[int, ...]  # ArtifactFormat values it loads
    kinds: tuple[int, ...]  # ModelKind values it serves
    gpu_probe: str  # Python code printing True when this build of the library can use a GPU


RUNTIMES: dict[str, RuntimeEntry] = {
    "llamacpp": RuntimeEntry(
        name="llamacpp",
        worker_module="ohmygpu.runtimes.llamacpp.worker",
        extra="llamacpp",
        library="llama_cpp",
        formats=(assets_pb2.ARTIFACT_FORMAT_GGUF,),
        kinds=(assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_EMBEDDING, assets_pb2.MODEL_KIND_UNSPECIFIED),
        gpu_probe="import llama_cpp; print(bool(llama_cpp.llama_supports_gpu_offload()))",
    ),
    "whisper": RuntimeEntry(
        name="whisper",
        worker_module="ohmygpu.runtimes.whisper.worker",
        extra="whisper",
        library="faster_whisper",
        formats=(assets_pb2.ARTIFACT_FORMAT_CT2,),
        kinds=(assets_pb2.MODEL_KIND_WHISPER,),
        gpu_probe="import ctranslate2; print(ctranslate2.get_cuda_device_count() > 0)",
    ),
}


@functools.cache
def supports_gpu(name: str) -> bool:
    """Whether runtime `name`'s installed library was built with GPU support (a CPU-only
    llama-cpp-python wheel on a GPU machine must not be placed, or budgeted, on the GPU).
    Asked in a child process, once: a broken CUDA library must not take the daemon down."""
    entry = RUNTIMES[name]
    try:
        out = subprocess.run([sys.executable, "-c", entry.gpu_probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip().endswith("True")


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
