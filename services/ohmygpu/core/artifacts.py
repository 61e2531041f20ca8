"""Which of a model's files is the model: the one definition of its main artifact and digest.

Pure functions of an InstallRecord (no file is read), so the HTTP gateway and the CLI can use
them without the store.
"""

from __future__ import annotations

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.core.names import is_main_gguf


def find_main_artifact(record: assets_pb2.InstallRecord) -> assets_pb2.Artifact | None:
    """The artifact a runtime is given for the model, or None: the GGUF file (part 1 of a split
    model, never a projector) or a CTranslate2 model.bin or the first safetensors file. Not
    `artifacts[0]`: a pulled repo lists its README, configs and weights in the hub's order."""
    for artifact in record.artifacts:
        if artifact.format == record.format and is_main_gguf(artifact.filename):
            return artifact
    return None


def main_artifact(record: assets_pb2.InstallRecord) -> assets_pb2.Artifact:
    """The artifact a runtime loads; raises InvalidModelFile for a record with none."""
    artifact = find_main_artifact(record)
    if artifact is None:
        raise InvalidModelFile(f"model '{record.name}' has no loadable artifact")
    return artifact


def model_digest(record: assets_pb2.InstallRecord) -> str:
    """The model's digest ("sha256:<hex>", "" for a record without weights): its main
    artifact's. The one definition every API shows (/api/tags, /api/ps, `omg model add`) and
    the index compares (same name, same content), so clients that group models by digest
    (llm-ollama) see one file as one model."""
    artifact = find_main_artifact(record)
    return artifact.sha256 if artifact is not None else ""


def file_digests(record: assets_pb2.InstallRecord) -> frozenset[str]:
    """The sha256 of every file of `record` (what another store must hold to serve it)."""
    return frozenset(a.sha256 for a in record.artifacts if a.sha256)


def find_same_files(wanted: assets_pb2.InstallRecord,
                    held: list[assets_pb2.InstallRecord]) -> assets_pb2.InstallRecord | None:
    """The record among `held` holding every file of `wanted` (by sha256, whatever its name):
    the copy of a model another store has. None when none does, or `wanted` lists no digests."""
    need = file_digests(wanted)
    if not need:
        return None
    return next((r for r in held if need <= file_digests(r)), None)
