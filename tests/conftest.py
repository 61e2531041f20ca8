"""Fixtures: one daemon serving SmolLM2 for the end-to-end tests of a session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProc, new_daemon, smollm2_path


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("daemon")).start()
    added = d.omg("model", "add", str(gguf_path), "--name", "smollm2")
    assert added.returncode == 0, added.stderr
    try:
        yield d
    finally:
        d.stop()
