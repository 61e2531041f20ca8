"""Uploaded audio held on disk while a worker reads it: private files under OMG_HOME/uploads,
removed when the request ends (or, after a crash, when the daemon next starts)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class Uploads:
    """The daemon's upload directory."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "uploads"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for stale in self.dir.iterdir():  # left by a daemon that died mid-request
            stale.unlink(missing_ok=True)

    @contextlib.contextmanager
    def new_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A fresh private file, open for writing; deleted when the block ends."""
        path = self.dir / uuid.uuid4().hex
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                yield path, f
        finally:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def holding(self, data: bytes) -> Iterator[Path]:
        """`data` written to a private file for the duration of the block."""
        with self.new_file() as (path, f):
            f.write(data)
            f.flush()
            yield path
