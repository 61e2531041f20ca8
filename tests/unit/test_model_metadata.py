"""A model's digest and capabilities from its record: one definition for every API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ohmygpu.api.v1 import models_pb2
from ohmygpu.assets.v1 import assets_pb2 as A
from ohmygpu.core.access import ADMIN_METHODS
from ohmygpu.core.artifacts import find_main_artifact, model_digest
from ohmygpu.core.capabilities import capabilities
from ohmygpu.core.errors import AlreadyExists
from ohmygpu.core.store import ModelStore

from tests.helpers import smollm2_path

GGUF, CT2, OTHER, ST = A.ARTIFACT_FORMAT_GGUF, A.ARTIFACT_FORMAT_CT2, A.ARTIFACT_FORMAT_OTHER, A.ARTIFACT_FORMAT_SAFETENSORS


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _record(name: str, fmt: int, kind: int, files: list[tuple[str, int]], template: str = "") -> A.InstallRecord:
    """A record as a pull registers it: the repo's files in the hub's order."""
    r = A.InstallRecord(name=name, format=fmt, kind=kind)
    for filename, f in files:
        r.artifacts.add(filename=filename, format=f, sha256=_sha(filename), size=1)
    if template:
        r.gguf.chat_template = template
    return r


@pytest.mark.parametrize(("files", "main"), [
    ([("README.md", OTHER), ("smol.Q4_1.gguf", GGUF), ("params.json", OTHER)], "smol.Q4_1.gguf"),
    ([("mmproj-f16.gguf", GGUF), ("m.Q4_K_M.gguf", GGUF)], "m.Q4_K_M.gguf"),  # never the projector
    ([("m-00002-of-00002.gguf", GGUF), ("m-00001-of-00002.gguf", GGUF)], "m-00001-of-00002.gguf"),
])
def test_digest_is_the_gguf_a_runtime_is_given(files: list[tuple[str, int]], main: str) -> None:
    r = _record("m", GGUF, A.MODEL_KIND_LLM, files)
    assert find_main_artifact(r).filename == main and model_digest(r) == _sha(main)


def test_digest_of_a_whisper_directory_is_its_model_bin() -> None:
    r = _record("w", CT2, A.MODEL_KIND_WHISPER, [("README.md", OTHER), ("config.json", OTHER),
                                                 ("model.bin", CT2), ("vocabulary.txt", OTHER)])
    assert model_digest(r) == _sha("model.bin")
    assert model_digest(_record("none", GGUF, A.MODEL_KIND_LLM, [("README.md", OTHER)])) == ""


@pytest.mark.parametrize(("fmt", "kind", "template", "expected"), [
    (GGUF, A.MODEL_KIND_LLM, "{% for m in messages %}{{ m.content }}{% endfor %}", ["completion"]),
    (GGUF, A.MODEL_KIND_LLM, "{% if tools %}{{ tools | tojson }}{% endif %}", ["completion", "tools"]),
    (GGUF, A.MODEL_KIND_UNSPECIFIED, "", ["completion"]),  # records from before kinds: chat models
    (GGUF, A.MODEL_KIND_EMBEDDING, "", ["embedding"]),
    (CT2, A.MODEL_KIND_WHISPER, "", []),
    (ST, A.MODEL_KIND_LLM, "", []),  # no runtime of this version serves safetensors
    (ST, A.MODEL_KIND_IMAGE, "", []),
])
def test_capabilities_follow_the_runtime(fmt: int, kind: int, template: str, expected: list[str]) -> None:
    assert capabilities(_record("m", fmt, kind, [("x", fmt)], template)) == expected


def test_index_compares_models_by_their_main_artifact(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    gguf = smollm2_path()
    local = store.add_local(gguf, name="local")
    pulled = _record("hf.co/org/smol:Q4_1", GGUF, A.MODEL_KIND_LLM, [("README.md", OTHER), (gguf.name, GGUF)])
    pulled.artifacts[1].sha256 = local.artifacts[0].sha256  # the same file, pulled
    store.put(pulled)
    # Same content: a copy onto the other name changes nothing (ollama's copy semantics)...
    assert store.alias(pulled.name, "local").name == "local"
    assert store.alias("local", pulled.name).name == pulled.name
    # ...also for an index written when the README's hash stood for the pulled model.
    with store._lock:
        store._db.execute("UPDATE models SET sha256 = ? WHERE name = ?", (_sha("README.md"), pulled.name))
    assert store.alias("local", pulled.name).name == pulled.name
    # Other content is still refused.
    other = _record("other", GGUF, A.MODEL_KIND_LLM, [("o.gguf", GGUF)])
    store.put(other)
    with pytest.raises(AlreadyExists):
        store.alias("other", "local")


def test_alias_model_is_management() -> None:
    # /api/copy needs the admin token (access.OLLAMA_ADMIN); its RPC over gRPC and HTTP too.
    method = models_pb2.DESCRIPTOR.services_by_name["ModelService"].methods_by_name["AliasModel"]
    assert method.full_name in ADMIN_METHODS
