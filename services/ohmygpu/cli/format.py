"""Formatting shared by the CLI's commands and views."""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf import json_format


def size(n: float) -> str:
    """Bytes in decimal units: "512 B", "98.4 MB"."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def ago(ts: Any) -> str:
    """A protobuf Timestamp as "3m ago" ("never" when unset)."""
    if not ts.seconds:
        return "never"
    delta = max(0, time.time() - ts.seconds)
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= secs:
            return f"{int(delta // secs)}{unit} ago"
    return "just now"


def print_json(message: Any) -> None:
    """A protobuf message as indented JSON on stdout (the --json output of every command)."""
    print(json.dumps(json_format.MessageToDict(message), indent=2))


def table(rows: list[list[str]], header: list[str]) -> None:
    """Rows under a header, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
