"""The fake hub is faithful: huggingface_hub's own client, pointed at it, downloads from it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.hub import FakeHub, FakeRepo


def _snapshot(endpoint: str, cache: Path, repo: str, **kw: str) -> subprocess.CompletedProcess:
    # A separate process: huggingface_hub reads HF_ENDPOINT when it is imported.
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    code = ("import huggingface_hub as h; "
            f"print(h.snapshot_download({repo!r}, cache_dir={str(cache)!r}{', ' + args if args else ''}))")
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_snapshot_download_from_fake_hub(tmp_path: Path, gguf_path: Path) -> None:
    model = gguf_path.read_bytes()
    repo = FakeRepo("test-org/smol-GGUF", {"smol.Q4_1.gguf": model, "README.md": b"# smol\n",
                                           "config/params.json": b'{"a": 1}'})
    with FakeHub([repo]) as hub:
        r = _snapshot(hub.endpoint, tmp_path / "hf", "test-org/smol-GGUF")
        assert r.returncode == 0, r.stderr[-3000:]
        snap = Path(r.stdout.strip().splitlines()[-1])
        assert snap.name == repo.commit
        got = (snap / "smol.Q4_1.gguf").read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(model).hexdigest()
        assert (snap / "config/params.json").read_bytes() == b'{"a": 1}'
        # LFS bytes came from the CDN host after a redirect from the hub.
        assert any(s.path.startswith("/blobs/") and s.host.startswith("localhost") for s in hub.seen)
        assert any("/resolve/" in s.path for s in hub.seen)
        # The hub's errors are understood by huggingface_hub as the right exceptions.
        missing = _snapshot(hub.endpoint, tmp_path / "hf2", "test-org/nope")
        assert missing.returncode != 0 and "RepositoryNotFoundError" in missing.stderr
        bad_rev = _snapshot(hub.endpoint, tmp_path / "hf3", "test-org/smol-GGUF", revision="no-such-branch")
        assert bad_rev.returncode != 0 and "RevisionNotFoundError" in bad_rev.stderr


def test_gated_repo_needs_token(tmp_path: Path) -> None:
    with FakeHub([FakeRepo("org/gated", {"a.txt": b"x"}, gated=True)]) as hub:
        r = _snapshot(hub.endpoint, tmp_path / "hf", "org/gated")
        assert r.returncode != 0 and "GatedRepoError" in r.stderr
        ok = _snapshot(hub.endpoint, tmp_path / "hf", "org/gated", token=hub.token)
        assert ok.returncode == 0, ok.stderr[-2000:]


def test_range_requests_and_faults(tmp_path: Path) -> None:
    import httpx

    data = bytes(range(256)) * 8192  # 2 MiB: LFS
    repo = FakeRepo("org/r", {"w.bin": data})
    with FakeHub([repo]) as hub:
        head = httpx.head(f"{hub.endpoint}/org/r/resolve/main/w.bin")
        assert head.status_code == 302 and head.headers["X-Repo-Commit"] == repo.commit
        assert head.headers["X-Linked-Size"] == str(len(data))
        url = head.headers["Location"]
        part = httpx.get(url, headers={"Range": "bytes=100-"})
        assert part.status_code == 206 and part.content == data[100:]
        hub.faults.ignore_range = True
        whole = httpx.get(url, headers={"Range": "bytes=100-"})
        assert whole.status_code == 200 and whole.content == data
        hub.faults.rate_limit_429 = 1
        assert httpx.get(f"{hub.endpoint}/api/models/org/r").status_code == 429
        assert httpx.get(f"{hub.endpoint}/api/models/org/r").json()["sha"] == repo.commit
