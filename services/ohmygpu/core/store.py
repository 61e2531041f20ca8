"""The model store's index: install records by name, in SQLite under OMG_HOME.

Records are stored as serialized `InstallRecord` protos, so the index holds exactly what the
contract says a model is. Local files are registered in place (no copy) and identified by
sha256; registering the same content under a second name reuses its artifacts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import diffusion_parts, diffusion_pipeline
from ohmygpu.core.artifacts import find_main_artifact, main_artifact, model_digest
from ohmygpu.core.digests import sha256_file
from ohmygpu.core.errors import (
    AlreadyExists,
    CorruptIndex,
    IncompleteSplitModel,
    InvalidArgument,
    InvalidModelFile,
    ModelNotFound,
    UnloadableModel,
    UnusablePart,
)
from ohmygpu.core.gguf import GgufHeader, read_model_header
from ohmygpu.core.gguf_check import check_loadable, check_tensors
from ohmygpu.core.index_db import open_index, timestamp
from ohmygpu.core.diffusion import diffusion_info, gguf_diffusion_info
from ohmygpu.core.kinds import classify_files, format_of
from ohmygpu.core.speech_files import speech_info
from ohmygpu.core.safetensors_header import read_header
from ohmygpu.core.transformers_info import fill_record, module_files
from ohmygpu.core.names import (
    default_name_for,
    parse_model_name,
    shard_names,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    record BLOB NOT NULL,
    last_used REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS models_sha256 ON models(sha256);
"""
_MAX_DIR_FILES = 200
log = logging.getLogger("ohmygpu.store")
__all__ = ["ModelStore", "find_main_artifact", "gguf_info", "kind_of", "main_artifact", "model_digest"]


def gguf_info(header: GgufHeader) -> assets_pb2.GgufInfo:
    """The contract's view of a GGUF header."""
    def as_int(v: object | None) -> int:
        return int(v) if isinstance(v, (int, float)) else 0

    return assets_pb2.GgufInfo(
        architecture=header.architecture,
        name=str(header.metadata.get("general.name") or ""),
        parameter_count=header.parameter_count,
        quantization=header.quantization,
        context_length=as_int(header.arch_value("context_length")),
        embedding_length=as_int(header.arch_value("embedding_length")),
        block_count=as_int(header.arch_value("block_count")),
        chat_template=str(header.metadata.get("tokenizer.chat_template") or ""),
        gguf_version=header.version,
        head_count=as_int(header.arch_value("attention.head_count")),
        head_count_kv=as_int(header.arch_value("attention.head_count_kv") or header.arch_value("attention.head_count")),
        tensor_data_bytes=header.tensor_data_bytes,
        vocab_size=header.array_lengths.get("tokenizer.ggml.tokens", 0),
    )


def kind_of(header: GgufHeader) -> int:
    # Embedding-only architectures (BERT family) have no chat use; pooling_type marks them too.
    arch = header.architecture
    if arch in {"bert", "nomic-bert", "jina-bert-v2", "t5encoder"} or header.arch_value(
        "pooling_type"
    ) not in (None, 0):
        return assets_pb2.MODEL_KIND_EMBEDDING
    return assets_pb2.MODEL_KIND_LLM


def describe_gguf(record: assets_pb2.InstallRecord, header: GgufHeader, path: Path) -> None:
    """Check the GGUF whose first file is `path` and fill `record`'s kind, format and info: a
    diffusion model (stable-diffusion.cpp's; only its tensor table is ours to check) or
    llama.cpp's. Raises UnloadableModel when it cannot load."""
    record.format = assets_pb2.ARTIFACT_FORMAT_GGUF
    diffusion = gguf_diffusion_info(header)
    if diffusion is not None:
        check_tensors(header, path)
        record.kind = assets_pb2.MODEL_KIND_IMAGE
        record.diffusion.CopyFrom(diffusion)
    else:
        check_loadable(header, path)
        record.kind = kind_of(header)
        record.gguf.CopyFrom(gguf_info(header))


class ModelStore:
    """The index of installed models. Thread-safe; every method may block on disk."""

    def __init__(self, home: Path) -> None:
        """Raises CorruptIndex when store.db is damaged (the message says how to recover)."""
        self.home = home
        self._lock = threading.Lock()
        self._db = open_index(home, _SCHEMA)
        self._damaged: set[str] = set()  # names whose record cannot be read, logged once each

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> assets_pb2.InstallRecord:
        """The record named `name`; raises ModelNotFound (or InvalidName for a bad name)."""
        name = parse_model_name(name)
        with self._lock:
            row = self._db.execute(
                "SELECT record, last_used FROM models WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise ModelNotFound(name)
        record = self._decode(name, row[0], row[1])
        if record is None:
            raise CorruptIndex(f"the index record of model '{name}' is damaged and cannot be read; "
                               f"`omg model rm {name}` forgets it, then pull or add it again")
        return record

    def base_of(self, record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord | None:
        """The base model an adapter (MODEL_KIND_ADAPTER) is served over; None for any other
        model. Raises ModelNotFound naming both when the base was removed."""
        if record.kind != assets_pb2.MODEL_KIND_ADAPTER:
            return None
        try:
            return self.get(record.adapter.base)
        except ModelNotFound:
            raise ModelNotFound(record.adapter.base or "(none)") from None

    def require(self, name: str) -> None:
        """Raise ModelNotFound (or InvalidName) unless a record, readable or damaged, has `name`."""
        name = parse_model_name(name)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ModelNotFound(name)

    def list(self) -> list[assets_pb2.InstallRecord]:
        """Every readable record, sorted by name. A damaged record is skipped (and logged, and
        listed by damaged()), so one bad row never makes every listing fail."""
        with self._lock:
            rows = self._db.execute("SELECT name, record, last_used FROM models ORDER BY name").fetchall()
        return [r for r in (self._decode(n, blob, used) for n, blob, used in rows) if r is not None]

    def damaged(self) -> list[str]:
        """Names whose index record cannot be read (`omg model verify` reports them)."""
        with self._lock:
            rows = self._db.execute("SELECT name, record, last_used FROM models ORDER BY name").fetchall()
        return [str(n) for n, blob, used in rows if self._decode(n, blob, used) is None]

    def _decode(self, name: object, blob: object, last_used: object) -> assets_pb2.InstallRecord | None:
        """The record of one row, or None when the row is damaged (bytes that are not an
        InstallRecord, a value of the wrong type, a name that does not match)."""
        try:
            if not isinstance(blob, bytes):
                raise TypeError(f"record is {type(blob).__name__}, not bytes")
            record = assets_pb2.InstallRecord.FromString(blob)
            if record.name != name:
                raise ValueError("record names another model")
            if last_used:
                record.last_used_at.FromNanoseconds(int(float(last_used) * 1e9))  # type: ignore[arg-type]
            return record
        except (DecodeError, TypeError, ValueError, OverflowError) as e:
            if name not in self._damaged:
                self._damaged.add(str(name))
                log.warning("store.db: the record of model %r is damaged (%s); skipped. "
                            "`omg model rm %s` forgets it", name, e, name)
            return None

    # -- writes -----------------------------------------------------------------------------

    def add_local(
        self,
        path: Path,
        *,
        name: str | None = None,
        progress: Callable[[int], None] | None = None,
        parts: list[Path] | None = None,
    ) -> assets_pb2.InstallRecord:
        """Register a local model in place, by sha256: a GGUF file, or a directory holding a
        CTranslate2 model (faster-whisper) or a transformers model. With `parts`, `path` is the
        diffusion model of a model published as several files and `parts` its VAE and text
        encoders (core/diffusion_parts.py).

        Raises InvalidModelFile when `path` is missing, unreadable or not a model (one message
        for all, so the endpoint is no oracle for which files exist), InvalidName for a bad
        name, AlreadyExists when the name holds other content.
        """
        shown = path.name or str(path)
        unusable = InvalidModelFile(
            f"cannot register {shown}: not a readable model (the path must be absolute and name "
            "an existing .gguf file, a Piper .onnx voice or a model directory such as a faster-whisper one)"
        )
        if not path.is_absolute() or any(not p.is_absolute() for p in parts or ()):
            raise unusable
        try:
            if parts:
                record, digest = self._set_record(path, parts, progress)
            elif path.is_dir():
                record, digest = self._dir_record(path, progress)
            elif path.is_file() and path.suffix.lower() == ".onnx":
                record, digest = self._files_record(path, {path.name: path, path.name + ".json":
                                                           path.with_name(path.name + ".json")}, progress)
            elif path.is_file() and path.suffix.lower() == ".safetensors":
                record, digest = self._checkpoint_record(path, progress)
            elif path.is_file():
                record, digest = self._gguf_record(path, shown, progress)
            else:
                raise unusable
        except (IncompleteSplitModel, UnloadableModel, UnusablePart):
            # A real GGUF file, or a real model file in the wrong place of a set, named by the
            # caller: saying what is wrong with it leaks nothing.
            raise
        except (OSError, InvalidModelFile) as e:
            # One answer for missing, unreadable and malformed files: the endpoint must not tell
            # a remote caller which paths exist (ollama CVE-2024-39719).
            raise unusable from e
        model_name = parse_model_name(name) if name else default_name_for(path.name)
        record.name = model_name
        record.ref.kind = record.kind
        record.created_at.CopyFrom(timestamp())
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM models WHERE name = ?", (model_name,)).fetchone()
            if row is not None and row[0] != digest:
                raise AlreadyExists(
                    f"model '{model_name}' already exists with other content; "
                    "remove it first or pick another --name"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO models(name, sha256, record, last_used) VALUES (?, ?, ?, 0)",
                (model_name, digest, record.SerializeToString()),
            )
        return record

    @staticmethod
    def _gguf_record(path: Path, shown: str, progress: Callable[[int], None] | None,
                     ) -> tuple[assets_pb2.InstallRecord, str]:
        header = read_model_header(path, display_name=shown)
        record = assets_pb2.InstallRecord(
            ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_LOCAL, repo=str(path)))
        describe_gguf(record, header, path)
        # A split model registers every part (verify, du and rm see them all); the first,
        # which llama.cpp loads, comes first and is the main artifact (model_digest).
        for name in shard_names(path.name, header.shards) if header.shards > 1 else [path.name]:
            part = path.with_name(name)
            size = part.stat().st_size
            record.artifacts.add(filename=name, size=size, sha256=sha256_file(part, progress=progress),
                                 format=assets_pb2.ARTIFACT_FORMAT_GGUF, local_path=str(part))
            record.size_bytes += size
        return record, model_digest(record)

    @staticmethod
    def _checkpoint_record(path: Path, progress: Callable[[int], None] | None,
                           ) -> tuple[assets_pb2.InstallRecord, str]:
        """A single-file diffusion checkpoint (SD 1.x/2.x/XL, SD3, FLUX, Wan), told by its
        tensor names; any other safetensors file alone is not a model we can serve."""
        info = diffusion_info(read_header(path))
        if info is None:
            raise InvalidModelFile(f"{path.name} is not a diffusion checkpoint")
        size = path.stat().st_size
        record = assets_pb2.InstallRecord(
            ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_LOCAL, repo=str(path)),
            kind=assets_pb2.MODEL_KIND_IMAGE, format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS,
            size_bytes=size, diffusion=info)
        record.artifacts.add(filename=path.name, size=size, sha256=sha256_file(path, progress=progress),
                             format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS, local_path=str(path))
        return record, model_digest(record)

    @staticmethod
    def _set_record(path: Path, parts: list[Path], progress: Callable[[int], None] | None,
                    ) -> tuple[assets_pb2.InstallRecord, str]:
        """A diffusion model made of several files: `path` the diffusion model (recorded as a
        single file would be), `parts` its VAE and text encoders, each file's role told from
        its tensors (core/diffusion_parts.py)."""
        if len({p.name for p in [path, *parts]}) != len(parts) + 1:
            raise UnusablePart("the files of a multi-file model must have distinct names")
        main = diffusion_parts.read_part(path)
        if diffusion_parts.role_of(main) != diffusion_parts.DENOISER:
            raise UnusablePart("the first file of a multi-file diffusion model must be its diffusion model "
                               "(UNet or diffusion transformer)")
        if path.suffix.lower() == ".gguf":
            record, _ = ModelStore._gguf_record(path, path.name, progress)
        else:
            record, _ = ModelStore._checkpoint_record(path, progress)
        files = []
        for p in parts:
            size = p.stat().st_size
            files.append((p, assets_pb2.Artifact(filename=p.name, size=size, local_path=str(p),
                                                  sha256=sha256_file(p, progress=progress))))
        try:
            diffusion_parts.compose(record, path, main, files)
        except InvalidModelFile as e:
            raise UnusablePart(str(e)) from e
        return record, model_digest(record)

    @staticmethod
    def _dir_record(path: Path, progress: Callable[[int], None] | None,
                    ) -> tuple[assets_pb2.InstallRecord, str]:
        if (path / diffusion_pipeline.PIPELINE_INDEX).is_file():
            return ModelStore._pipeline_record(path, progress)
        files = {p.name: p for p in sorted(path.iterdir())
                 if p.is_file() and not p.name.startswith(".")}
        if len(files) > _MAX_DIR_FILES:
            raise InvalidModelFile(f"{path.name} holds more than {_MAX_DIR_FILES} files")
        return ModelStore._files_record(path, files, progress)

    @staticmethod
    def _pipeline_record(path: Path, progress: Callable[[int], None] | None,
                         ) -> tuple[assets_pb2.InstallRecord, str]:
        """A diffusers pipeline folder: one weight file per component and the small files, as a
        pull takes them (core/diffusion_pipeline.py); the other variants stay unregistered."""
        try:
            files = diffusion_pipeline.local_files(path, _MAX_DIR_FILES)
        except InvalidArgument as e:
            # What the folder holds is not for a caller to learn: one answer for every refusal.
            raise InvalidModelFile(str(e)) from e
        record = assets_pb2.InstallRecord(
            ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_LOCAL, repo=str(path)))
        for rel, p in files.items():
            size = p.stat().st_size
            record.artifacts.add(filename=rel, size=size, sha256=sha256_file(p, progress=progress),
                                 format=format_of(rel), local_path=str(p))
            record.size_bytes += size
        diffusion_pipeline.describe(record, files)
        return record, model_digest(record)

    @staticmethod
    def _files_record(path: Path, files: dict[str, Path], progress: Callable[[int], None] | None,
                      ) -> tuple[assets_pb2.InstallRecord, str]:
        """The record of a model made of `files` (a directory's, or a Piper voice's .onnx and
        .onnx.json): its kind and main file from classify_files."""
        files = {n: p for n, p in files.items() if p.is_file()}
        kind, fmt, main = classify_files(files)
        if not main:
            raise InvalidModelFile(f"{path.name} holds no model weights")
        record = assets_pb2.InstallRecord(
            ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_LOCAL, repo=str(path)),
            kind=kind, format=fmt)
        if kind == assets_pb2.MODEL_KIND_TTS:
            record.speech.CopyFrom(speech_info(files))
        fill_record(record, path, files)  # a transformers folder: its kind and TransformersInfo
        if record.HasField("transformers"):
            files.update(module_files(path))  # sentence-transformers modules' subfolders (1_Pooling/)
        # The main file first (where people look for it); model_digest finds it by format.
        for fname in [main] + [n for n in files if n != main]:
            p = files[fname]
            size = p.stat().st_size
            record.artifacts.add(filename=fname, size=size, sha256=sha256_file(p, progress=progress),
                                 format=fmt if fname == main else format_of(fname), local_path=str(p))
            record.size_bytes += size
        return record, model_digest(record)

    def put(self, record: assets_pb2.InstallRecord) -> None:
        """Insert or replace a record (pulls re-register the same name at a new revision)."""
        name = parse_model_name(record.name)
        digest = model_digest(record)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO models(name, sha256, record, last_used) VALUES (?, ?, ?, 0)",
                (name, digest, record.SerializeToString()))

    def put_created(self, record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord | None:
        """Store a record made by CreateModel (core/derived.py, core/blobs.py). A name holding a
        model not made that way is refused with AlreadyExists (create never replaces a pulled or
        added model); one made that way is replaced, and returned so its files can be freed."""
        name = parse_model_name(record.name)
        with self._lock:
            held = self._replaceable(name)
            self._db.execute(
                "INSERT OR REPLACE INTO models(name, sha256, record, last_used) VALUES (?, ?, ?, 0)",
                (name, model_digest(record), record.SerializeToString()))
        return held

    def check_creatable(self, name: str) -> None:
        """Raise AlreadyExists (or InvalidName) when put_created would refuse `name`: checked
        before any file is linked for it."""
        name = parse_model_name(name)
        with self._lock:
            self._replaceable(name)

    def _replaceable(self, name: str) -> assets_pb2.InstallRecord | None:
        """(Under the lock.) The created model `name` holds, which a new one replaces; None when
        the name is free. Raises AlreadyExists for any other model."""
        row = self._db.execute("SELECT record FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        held = self._decode(name, row[0], 0)
        if held is None or not held.HasField("derived"):
            raise AlreadyExists(f"model '{name}' already exists and was not made by create; remove it "
                                f"first (`omg model rm {name}`) or pick another name")
        return held

    def alias(self, source: str, destination: str) -> assets_pb2.InstallRecord:
        """Register `destination` as another name for `source`'s files (no bytes copied).

        Raises ModelNotFound, InvalidName, and AlreadyExists when `destination` names another
        model: a copy never replaces one (ollama's /api/copy silently overwrites; we refuse).
        Copying onto a name that already holds the same content changes nothing."""
        record = self.get(source)
        record.name = parse_model_name(destination)
        record.ClearField("last_used_at")
        digest = model_digest(record)
        with self._lock:
            row = self._db.execute("SELECT sha256, record FROM models WHERE name = ?", (record.name,)).fetchone()
            if row is not None:
                # Compared by the record, not only the column: indexes written before
                # model_digest hold artifacts[0]'s hash there (a pulled repo's README).
                held = self._decode(record.name, row[1], 0)
                if row[0] == digest or (held is not None and digest and model_digest(held) == digest):
                    return record
                raise AlreadyExists(f"model '{record.name}' already exists; remove it first "
                                    f"(`omg model rm {record.name}`) or copy to another name")
            self._db.execute("INSERT INTO models(name, sha256, record, last_used) VALUES (?, ?, ?, 0)",
                             (record.name, digest, record.SerializeToString()))
        return record

    def delete(self, name: str) -> None:
        """Forget a model; raises ModelNotFound. Files registered in place are left alone."""
        name = parse_model_name(name)
        with self._lock:
            cur = self._db.execute("DELETE FROM models WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise ModelNotFound(name)

    def touch(self, name: str) -> None:
        """Record that a request used the model now."""
        with self._lock:
            self._db.execute("UPDATE models SET last_used = ? WHERE name = ?", (time.time(), name))
