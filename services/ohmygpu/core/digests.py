"""sha256 digests: the one parser every file-creating path uses, and file hashing.

A digest from a manifest, a hub answer or a user is parsed here before anything builds a path
from it (ollama CVE-2024-37032 used a digest as a path).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from ohmygpu.core.errors import InvalidDigest

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20


def parse_digest(value: str) -> str:
    """Return `value` if it is exactly `sha256:<64 lowercase hex>`; raise InvalidDigest otherwise."""
    if not isinstance(value, str) or _DIGEST.fullmatch(value) is None:
        shown = repr(value)[:80]
        raise InvalidDigest(f"invalid digest {shown}: expected sha256:<64 lowercase hex>")
    return value


def hex_of(digest: str) -> str:
    """The 64 hex characters of a validated digest."""
    return parse_digest(digest)[len("sha256:") :]


def sha256_file(path: Path, *, progress: Callable[[int], None] | None = None) -> str:
    """Hash a file in 1 MiB chunks; returns `sha256:<hex>`. Raises OSError when unreadable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return "sha256:" + h.hexdigest()
