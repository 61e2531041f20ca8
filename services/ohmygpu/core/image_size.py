"""An image size as every edge writes it ("512x512", OpenAI's and the CLI's --size), parsed once;
the daemon checks the bounds (admission.check_image)."""

from __future__ import annotations

from typing import Any

from ohmygpu.core.errors import InvalidArgument


def parse_size(value: Any) -> tuple[int, int]:
    """'512x512' -> (512, 512); 'auto' or unset -> (0, 0): the model's native size."""
    if value is None or value == "auto":
        return 0, 0
    if not isinstance(value, str):
        raise InvalidArgument("'size' must be a string such as 512x512", param="size")
    w, sep, h = value.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or len(w) > 5 or len(h) > 5:
        raise InvalidArgument("'size' must be WIDTHxHEIGHT in pixels, such as 512x512", param="size")
    return int(w), int(h)
