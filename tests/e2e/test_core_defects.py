"""Defects of the daemon's core found by reading it (issue 11): a run whose model also has an
embeddings worker could not be stopped, and a decoder crash on an upload took the daemon down."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import DaemonProc, new_daemon
from tests.unit.test_audio_probe import hostile_decoder

pytestmark = pytest.mark.slow


def _loaded(d: DaemonProc) -> list[dict]:
    return httpx.get(d.http + "/api/ps", timeout=10).json()["models"]


def _workers(d: DaemonProc) -> list[psutil.Process]:
    assert d.proc is not None
    return [p for p in psutil.Process(d.proc.pid).children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


def test_stopping_a_run_stops_its_embeddings_worker_too(tmp_path: Path, gguf_path: Path) -> None:
    """Pinned by a run, then used for embeddings (a second worker): `omg run stop` failed with
    KeyError 'smollm2#embeddings' and the run stayed running."""
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        r = httpx.post(d.http + "/v1/runs", json={"model": {"repo": "smollm2"}, "resources": {"contextLength": 512}},
                       timeout=120)
        assert r.status_code == 200, r.text
        run = r.json()
        e = httpx.post(d.http + "/v1/embeddings", json={"model": "smollm2", "input": "hello"}, timeout=120)
        assert e.status_code == 200, e.text
        assert [m["name"] for m in _loaded(d)] == ["smollm2:latest"]  # one model is one /api/ps row...
        assert len(_workers(d)) == 2  # ...served by two workers: chat and embeddings
        # The embeddings worker is the run's model too: not unloadable on its own while pinned.
        refused = httpx.post(d.http + "/api/generate", json={"model": "smollm2", "keep_alive": 0}, timeout=30)
        assert refused.status_code >= 400 and "pinned" in refused.json()["error"], refused.text
        stopped = d.omg("run", "stop", run["id"])
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert httpx.get(f"{d.http}/v1/runs/{run['id']}").json()["state"] == "RUN_STATE_STOPPED"
        assert _loaded(d) == []
        deadline = time.monotonic() + 10
        while _workers(d) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _workers(d) == []
        # Both come back on demand, unpinned.
        again = httpx.post(d.http + "/v1/embeddings", json={"model": "smollm2", "input": "hello"}, timeout=120)
        assert again.status_code == 200 and len(_loaded(d)) == 1
    finally:
        d.stop()


def test_a_decoder_crash_on_an_upload_costs_one_request(tmp_path: Path, whisper_path: Path,
                                                        audio: dict[str, Path]) -> None:
    """The daemon runs with a PyAV whose `open` kills its process (SIGSEGV) on one file, as a
    decoder bug on a hostile upload does. The upload is a 400 and the daemon serves on; the
    check parsed uploads in the daemon's own process, which died with it."""
    d = new_daemon(tmp_path, extra_env={"PYTHONPATH": str(hostile_decoder(tmp_path))}).start()
    try:
        assert d.omg("model", "add", str(whisper_path), "--name", "whisper-tiny.en").returncode == 0
        hostile = tmp_path / "hostile.wav"
        hostile.write_bytes(b"CRASH" + audio["wav"].read_bytes())
        with open(hostile, "rb") as f:
            r = httpx.post(f"{d.http}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                           files={"file": ("hostile.wav", f, "audio/wav")}, timeout=60)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "the decoder crashed on it" in message and "send wav" in message, message
        assert str(tmp_path) not in message and "SIGSEGV" not in message
        assert d.proc is not None and d.proc.poll() is None
        assert httpx.get(d.http + "/api/tags", timeout=10).status_code == 200
        with open(audio["wav"], "rb") as f:  # and the next upload is transcribed
            ok = httpx.post(f"{d.http}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                            files={"file": ("s.wav", f, "audio/wav")}, timeout=300)
        assert ok.status_code == 200 and "fox" in ok.json()["text"].lower(), ok.text
    finally:
        d.stop()
