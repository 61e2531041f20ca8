"""ollama's keep_alive values: Go durations ("5m", "1h30m", "500ms"), bare seconds, negatives
meaning "forever"."""

from __future__ import annotations

import re

from ohmygpu.core.errors import InvalidArgument

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: str | float | int) -> float | None:
    """Seconds to keep a model loaded after a request; None means forever (a negative value).

    Raises InvalidArgument for anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value < 0 else float(value)
    text = str(value).strip()
    negative = text.startswith("-")
    body = text[1:] if negative else text
    try:
        if not body[:1].isdigit():
            raise ValueError(body)
        seconds = float(body)
    except ValueError:
        parts = _PART.findall(body)
        if not body or "".join(n + u for n, u in parts) != body:
            raise InvalidArgument(f"invalid keep_alive {text[:40]!r}: use a duration like 5m, 30s or -1",
                                  param="keep_alive") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if negative and seconds > 0:
        return None
    return seconds
