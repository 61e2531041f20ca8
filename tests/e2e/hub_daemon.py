"""A daemon serving SmolLM2 as `smollm2`, with the fake hub as its Hugging Face endpoint: what the
client, OpenAPI and fuzzing tests run against (no call of theirs leaves loopback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, new_daemon

# A repository on the fake hub holding the test GGUF: what the clients' pull tests pull.
PULL_REPO = "test-org/smol-GGUF"


@contextlib.contextmanager
def hub_daemon(tmp: Path, gguf_path: Path, **extra_env: str) -> Iterator[tuple[DaemonProc, FakeHub]]:
    repos = [FakeRepo(PULL_REPO, {"smol.Q4_1.gguf": gguf_path.read_bytes(), "README.md": b"# smol\n"})]
    with FakeHub(repos) as hub:
        d = new_daemon(tmp, extra_env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp / "hf"),
                                       "HF_HUB_DISABLE_XET": "1", **extra_env}).start()
        try:
            added = d.omg("model", "add", str(gguf_path), "--name", "smollm2")
            assert added.returncode == 0, added.stderr
            yield d, hub
        finally:
            d.stop()
