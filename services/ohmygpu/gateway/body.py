"""Reading JSON request bodies with a size limit, and typed field access that names the field
in its error (a wrong type is a 400 in the dialect's format, never a stack trace).

Every JSON route of every dialect reads its body here, so what any JSON body must be is
checked once: a JSON Content-Type (a cross-site page can send text/plain without a CORS
preflight), no lone UTF-16 surrogate (JSON's "\\ud800" is not text: it cannot be encoded,
and would fail deep inside as a 500), and bounded work (message count, total characters).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType
from starlette.datastructures import Headers
from starlette.requests import Request

# A \uD800-\uDFFF escape in the raw body: only then can the parsed value hold a surrogate
# (strict UTF-8 cannot encode one; a valid escaped pair is joined by the parser).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class BodyLimits:
    """What one JSON body may hold."""

    max_bytes: int
    max_messages: int = 10_000
    max_text_chars: int = 8_000_000


def check_json_type(headers: Headers) -> None:
    """Refuse a body sent as anything but JSON; raises UnsupportedMediaType.

    No Content-Type is accepted (SDKs and scripts that send none), and so is
    application/x-www-form-urlencoded from a client that is not a browser: `curl -d` sends
    that, and ollama's documentation uses `curl -d` everywhere. A browser marks its requests
    with Origin or Sec-Fetch-* headers.
    """
    ctype = headers.get("content-type")
    if ctype is None:
        return
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return
    from_browser = "origin" in headers or any(k.startswith("sec-fetch-") for k in headers.keys())
    if mime == "application/x-www-form-urlencoded" and not from_browser:
        return
    raise UnsupportedMediaType(f"request body must be JSON (Content-Type: application/json), "
                               f"not {mime[:60] or 'an empty type'!r}")


async def read_json(request: Request, limit: int | BodyLimits) -> dict[str, Any]:
    """The body as a JSON object; raises PayloadTooLarge, UnsupportedMediaType or InvalidArgument."""
    limits = limit if isinstance(limit, BodyLimits) else BodyLimits(limit)
    check_json_type(request.headers)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidArgument("invalid Content-Length")
        if int(declared) > limits.max_bytes:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the {limits.max_bytes} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLarge(f"request body is over the {limits.max_bytes} byte limit")
        chunks.append(chunk)
    return parse_json(b"".join(chunks), limits)


def parse_json(raw: bytes, limits: BodyLimits) -> dict[str, Any]:
    """A JSON object from a body's bytes, checked for what every JSON body must be."""
    if not raw.strip():
        raise InvalidArgument("request body is empty; expected a JSON object")
    try:
        # Strict UTF-8 (RFC 8259; a BOM is skipped): json.loads on bytes would let
        # UTF-8-encoded surrogates (ED A0 80) and UTF-16 bodies through.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    messages = value.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidArgument(f"'messages' holds {len(messages)} messages, more than the limit of "
                              f"{limits.max_messages} (OMG_MAX_MESSAGES)", param="messages")
    chars = _text_chars(value)
    if chars > limits.max_text_chars:
        raise PayloadTooLarge(f"request holds {chars} characters of text, more than the limit of "
                              f"{limits.max_text_chars} (OMG_MAX_TEXT_CHARS)")
    if _SURROGATE_ESCAPE.search(raw):
        where = _surrogate_at(value)
        if where is not None:
            raise InvalidArgument(f"'{where}' holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF "
                                  "escape), which is not text", param=where)
    return value


def _text_chars(value: Any) -> int:
    """Characters in every string (keys too) of a parsed JSON value; iterative, as JSON may nest
    as deep as the parser allows."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                total += len(k)
                if not isinstance(item, (int, float, bool)) and item is not None:
                    stack.append(item)
        elif isinstance(v, list):
            stack.extend(item for item in v if isinstance(item, (str, dict, list)))
    return total


def _surrogate_at(value: Any) -> str | None:
    """The path ("messages[0].content") of the first key or string holding a lone surrogate."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return path or "body"
        elif isinstance(v, dict):
            for k, item in v.items():
                name = f"{path}.{k}" if path else str(k)
                if _SURROGATE.search(k):
                    return path + ".<key>" if path else "<key>"
                stack.append((item, name))
        elif isinstance(v, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(v))
    return None


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


@dataclass(frozen=True)
class FieldTable:
    """What a dialect's request may hold: fields honoured (read by the route), and fields the
    dialect defines that this daemon cannot honour, each with why. Anything else is a field the
    dialect does not define. Nothing is dropped silently: a refused or unknown field is a 400
    that names it (`check`)."""

    what: str  # "chat completions": named in the errors
    honoured: frozenset[str]
    refused: dict[str, str]  # field -> why (shown to the caller)

    def check(self, data: dict[str, Any], prefix: str = "") -> None:
        for key in data:
            if key in self.honoured:
                continue
            name = prefix + key
            why = self.refused.get(key)
            if why is not None:
                raise InvalidArgument(f"'{name}' is not supported: {why}", param=name)
            raise InvalidArgument(f"unrecognized request argument supplied: '{name}' is not a field of "
                                  f"{self.what} requests", param=name)
