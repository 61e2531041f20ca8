"""A bounded reader of a safetensors file's header: tensor names, dtypes and shapes, never data.

The format: 8 bytes little-endian header length, then that many bytes of JSON mapping each
tensor name to {dtype, shape, data_offsets} (and an optional "__metadata__" of strings). A file
from anywhere may lie about all of it, so the length is capped before anything is read, the JSON
must be an object of well-formed entries, and every tensor must lie inside the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from ohmygpu.core.errors import InvalidModelFile

MAX_HEADER = 100 << 20  # real checkpoints have headers of a few MiB (FLUX: ~0.1 MiB)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return math.prod(self.shape)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Tensor name -> entry; raises InvalidModelFile naming what is wrong (not the path)."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InvalidModelFile(f"{name} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length < 2 or length > MAX_HEADER or 8 + length > size:
                raise InvalidModelFile(f"{name} is not a safetensors file (header length {length})")
            raw = f.read(length)
    except OSError as e:
        raise InvalidModelFile(f"cannot read {name}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8").rstrip(" \x00"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidModelFile(f"{name} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{name} is not a safetensors file (its header is not an object)")
    body = size - 8 - length
    out: dict[str, TensorEntry] = {}
    for key, entry in data.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)):
            raise InvalidModelFile(f"{name}: tensor {key[:80]!r} has a malformed entry")
        shape = entry["shape"]
        offsets = entry["data_offsets"]
        if (not all(isinstance(d, int) and d >= 0 for d in shape) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= body):
            raise InvalidModelFile(f"{name}: tensor {key[:80]!r} lies outside the file")
        width = _DTYPE_BYTES.get(entry["dtype"])
        if width is not None and offsets[1] - offsets[0] != width * math.prod(shape):
            raise InvalidModelFile(f"{name}: tensor {key[:80]!r} has a size that does not match its shape")
        out[key] = TensorEntry(entry["dtype"], tuple(shape))
    if not out:
        raise InvalidModelFile(f"{name} holds no tensors")
    return out
