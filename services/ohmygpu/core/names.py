"""Validation of model names before they are stored, shown or used to build anything."""

from __future__ import annotations

import re

from ohmygpu.core.errors import InvalidName

# Ollama-style names ("smollm2", "smollm2:135m", "hf.co/org/repo:Q4_K_M"): letters, digits and
# . _ - : / only, no empty or dot-only path segments, at most 256 characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-:/]{0,255}")


def parse_model_name(value: str) -> str:
    """Return the model name if it is well formed; raise InvalidName otherwise."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise InvalidName(
            f"invalid model name {repr(value)[:80]}: use letters, digits and . _ - : / "
            "(at most 256 characters, starting with a letter or digit)",
            param="model",
        )
    segments = value.split(":", 1)[0].split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise InvalidName(f"invalid model name {value!r}: empty or dot path segment", param="model")
    return value


def default_name_for(filename: str) -> str:
    """A model name derived from a file name ("SmolLM2-135M.Q4_1.gguf" -> "smollm2-135m.q4_1")."""
    stem = filename.rsplit("/", 1)[-1]
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    cleaned = re.sub(r"[^A-Za-z0-9._\-]", "-", stem).strip("-.").lower()
    return parse_model_name(cleaned or "model")
