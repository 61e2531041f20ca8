"""Reading JSON request bodies with a size limit, and typed field access that names the field
in its error (a wrong type is a 400 in the dialect's format, never a stack trace)."""

from __future__ import annotations

import json
import math
from typing import Any

from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge
from starlette.requests import Request


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; raises PayloadTooLarge or InvalidArgument."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidArgument("invalid Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit} byte limit")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidArgument("request body is empty; expected a JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


class Fields:
    """Typed access to a JSON object's fields; every error names the field."""

    def __init__(self, data: dict[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def _bad(self, key: str, want: str) -> InvalidArgument:
        name = self.prefix + key
        return InvalidArgument(f"'{name}' must be {want}", param=name)

    def str(self, key: str, *, required: bool = False, default: str = "") -> str:
        v = self.data.get(key)
        if v is None:
            if required:
                raise InvalidArgument(f"'{self.prefix + key}' is required", param=self.prefix + key)
            return default
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._bad(key, "true or false")
        return v

    def number(self, key: str, lo: float, hi: float) -> float | None:
        v = self.data.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._bad(key, "a number")
        if not lo <= v <= hi:
            raise self._bad(key, f"between {lo:g} and {hi:g}")
        return float(v)

    def int(self, key: str, lo: int, hi: int) -> int | None:
        v = self.data.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise self._bad(key, "an integer")
        if not lo <= v <= hi:
            raise self._bad(key, f"between {lo} and {hi}")
        return v

    def obj(self, key: str) -> dict[str, Any] | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._bad(key, "an object")
        return v

    def list(self, key: str) -> list[Any] | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, list):
            raise self._bad(key, "an array")
        return v

    def stop(self, key: str) -> list[str]:
        v = self.data.get(key)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            return list(v)
        raise self._bad(key, "a string or an array of strings")
