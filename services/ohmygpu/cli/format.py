"""Formatting shared by the CLI's commands and views."""

from __future__ import annotations


def size(n: float) -> str:
    """Bytes in decimal units: "512 B", "98.4 MB"."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
