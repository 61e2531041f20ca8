"""A bounded reader of GGUF headers: metadata and tensor shapes, never tensor data.

GGUF parsers have a long CVE history (counts, offsets and lengths taken on trust). This one
reads with hard limits on every count and length and fails with InvalidModelFile, so the
daemon can show a model's metadata without handing the file to llama.cpp; loading the weights
happens only inside a worker process.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ohmygpu.core.errors import IncompleteSplitModel, InvalidModelFile, UnloadableModel
from ohmygpu.core.names import SHARD_NAME, shard_names

MAGIC = b"GGUF"
_MAX_KV = 1 << 16
_MAX_TENSORS = 1 << 20
_MAX_STRING = 64 << 20  # chat templates and merges can be large, not this large
_MAX_ARRAY = 1 << 26
_MAX_DIMS = 8

# GGUF value types -> struct formats for scalars.
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
                            7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's LLAMA_FTYPE values, as the names users know from file names.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it (its data is never read)."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the tensor data section


@dataclass
class GgufHeader:
    """What a GGUF header says, with large arrays (vocabularies) summarised by length."""

    version: int
    metadata: dict[str, object] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    parameter_count: int = 0
    tensor_count: int = 0
    data_offset: int = 0  # where tensor data starts (aligned)
    kv_end: int = 0  # where the metadata section ends (the tensor infos start)
    info_end: int = 0  # where the tensor infos end (before the alignment padding)
    file_size: int = 0
    shards: int = 1  # files of a split model (llama.cpp's gguf-split), this one the first
    other_shards_tensor_bytes: int = 0
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: object = 32  # general.alignment as written (checked by gguf_check, not trusted here)

    @property
    def tensor_data_bytes(self) -> int:
        return max(0, self.file_size - self.data_offset) + self.other_shards_tensor_bytes

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str) -> object | None:
        """`<architecture>.<key>`, e.g. arch_value("context_length")."""
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ftype, f"type {ftype}") if isinstance(ftype, int) else ""


class _Reader:
    def __init__(self, f: BinaryIO, where: str) -> None:
        self.f = f
        self.where = where

    def bad(self, why: str) -> InvalidModelFile:
        # Past the magic bytes the file is a GGUF one, and says so (no path: only its own fault).
        return UnloadableModel(f"the file is not a loadable model: {why}")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.bad("truncated header")
        return data

    def scalar(self, fmt: str) -> int | float | bool:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, limit: int, what: str) -> int:
        n = int(self.scalar("<Q"))
        if n > limit:
            raise self.bad(f"{what} {n} exceeds limit {limit}")
        return n

    def string(self) -> str:
        n = self.count(_MAX_STRING, "string length")
        return self.read(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        self.f.seek(n, 1)

    def value(self, vtype: int, key: str, header: GgufHeader, depth: int = 0) -> object | None:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise self.bad(f"unknown value type {vtype} for key {key!r}")
        if depth > 2:
            raise self.bad("arrays nested too deeply")
        itype = int(self.scalar("<I"))
        n = self.count(_MAX_ARRAY, "array length")
        header.array_lengths[key] = n
        if itype in _SCALARS:
            size = struct.calcsize(_SCALARS[itype])
            if n <= 64:  # small arrays are kept (e.g. rope sections); vocabularies are skipped
                return [self.scalar(_SCALARS[itype]) for _ in range(n)]
            self.skip(size * n)
            return None
        for _ in range(n):
            self.value(itype, key, header, depth + 1)
        return None


def read_header(path: Path, *, display_name: str | None = None) -> GgufHeader:
    """Parse the GGUF header of `path`; raises InvalidModelFile, or OSError when unreadable."""
    where = display_name or path.name
    with open(path, "rb") as f:
        r = _Reader(f, where)
        if f.read(4) != MAGIC:
            raise InvalidModelFile(f"{where} is not a GGUF file (wrong magic bytes)")
        version = int(r.scalar("<I"))
        if version not in (2, 3):
            raise r.bad(f"unsupported GGUF version {version}")
        n_tensors = r.count(_MAX_TENSORS, "tensor count")
        n_kv = r.count(_MAX_KV, "metadata count")
        header = GgufHeader(version=version, tensor_count=n_tensors)
        for _ in range(n_kv):
            key = r.string()
            vtype = int(r.scalar("<I"))
            header.metadata[key] = r.value(vtype, key, header)
        header.kv_end = f.tell()
        for _ in range(n_tensors):
            name = r.string()
            n_dims = int(r.scalar("<I"))
            if n_dims > _MAX_DIMS:
                raise r.bad(f"tensor with {n_dims} dimensions")
            dims = tuple(int(r.scalar("<Q")) for _ in range(n_dims))
            elements = 1
            for d in dims:
                elements *= d
            ggml_type, offset = struct.unpack("<IQ", r.read(4 + 8))
            header.tensors.append(TensorInfo(name[:200], dims, ggml_type, offset))
            header.parameter_count += elements
        header.alignment = header.metadata.get("general.alignment", 32)
        align = header.alignment
        align = align if isinstance(align, int) and 0 < align <= 1 << 20 else 32
        header.info_end = f.tell()
        header.data_offset = -(-header.info_end // align) * align
        header.file_size = path.stat().st_size
        return header


def read_model_header(path: Path, *, display_name: str | None = None) -> GgufHeader:
    """The header of a GGUF model that may be split over several files: `path` is the file
    llama.cpp loads (the first shard); the others, found beside it by name, add their tensors.
    Raises IncompleteSplitModel for a later part, a missing part or parts that disagree."""
    header = read_header(path, display_name=display_name)
    count, number = header.metadata.get("split.count"), header.metadata.get("split.no")
    if not isinstance(count, int) or count <= 1:
        return header
    where = display_name or path.name
    if count > 4096:
        raise InvalidModelFile(f"{where}: split into {count} files")
    if number != 0:
        part = f"part {number + 1}" if isinstance(number, int) else "a later part"
        raise IncompleteSplitModel(f"{where} is {part} of {count} of a split model; use the first "
                                   f"part, {shard_names(path.name, count)[0]}")
    if not SHARD_NAME.match(path.name):
        raise IncompleteSplitModel(f"{where} is the first of {count} parts of a split model but is not "
                                   "named PREFIX-00001-of-NNNNN.gguf, so llama.cpp cannot find the others")
    for index, name in enumerate(shard_names(path.name, count)[1:], start=1):
        shard_path = path.with_name(name)
        if not shard_path.is_file():
            raise IncompleteSplitModel(f"{where}: part {index + 1} of {count} ({name}) is missing beside it")
        shard = read_header(shard_path, display_name=name)
        if shard.metadata.get("split.no") != index or shard.metadata.get("split.count") != count:
            raise IncompleteSplitModel(f"{name} is not part {index + 1} of {count} of {where}")
        header.parameter_count += shard.parameter_count
        header.tensor_count += shard.tensor_count
        header.other_shards_tensor_bytes += shard.tensor_data_bytes
    header.shards = count
    return header
