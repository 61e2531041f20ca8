"""Hostile audio inputs: a small upload whose header claims hours of sound, and MCP `transcribe`
pointed at things that are not audio files (a FIFO, /dev/zero, a directory, a huge file)."""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory, whisper_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("hostile-audio"), extra_env={"OMG_MAX_AUDIO_SECONDS": "1800"}).start()
    r = d.omg("model", "add", str(whisper_path), "--name", "whisper-tiny.en")
    assert r.returncode == 0, r.stderr
    try:
        yield d
    finally:
        d.stop()


def _wav(path: Path, rate: int, width: int, size: int) -> Path:
    """`size` bytes of silence-ish samples under a header that says `rate` Hz."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(range(256)) * (size // 256))
    return path


def _worker_rss(d: DaemonProc) -> int:
    """The resident memory of the daemon and every worker under it, in bytes."""
    assert d.proc is not None
    daemon = psutil.Process(d.proc.pid)
    return sum(p.memory_info().rss for p in [daemon, *daemon.children(recursive=True)])


@pytest.mark.parametrize("rate,width", [(100, 1), (2, 2), (16000, 2)])
def test_a_header_claiming_hours_of_audio_is_refused_before_decoding(
        wd: DaemonProc, tmp_path: Path, rate: int, width: int, audio: dict[str, Path]) -> None:
    """1 MiB that says 100 Hz is 2.9 hours of sound (2 Hz 16-bit: 73 hours; 16 kHz 16-bit: 33 seconds, which
    is under the limit and must still work). Over OMG_MAX_AUDIO_SECONDS: a 400 at once, naming the
    limit, and no worker memory spent on it."""
    path = _wav(tmp_path / f"claims-{rate}hz.wav", rate, width, 1 << 20)
    seconds = (1 << 20) / (rate * width)
    before = _worker_rss(wd)
    started = time.monotonic()
    with open(path, "rb") as f:
        r = httpx.post(f"{wd.http}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                       files={"file": (path.name, f, "audio/wav")}, timeout=300)
    took = time.monotonic() - started
    if seconds <= 1800:
        assert r.status_code == 200, r.text  # the control: a long-enough but legal file works
        return
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "OMG_MAX_AUDIO_SECONDS" in error["message"] and "30 min" in error["message"], error
    assert str(tmp_path) not in error["message"]
    assert took < 10, took
    assert _worker_rss(wd) - before < 200 << 20
    with open(audio["wav"], "rb") as f:  # and the next upload is served
        ok = httpx.post(f"{wd.http}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                        files={"file": ("s.wav", f, "audio/wav")}, timeout=300)
    assert ok.status_code == 200 and "fox" in ok.json()["text"].lower(), ok.text


def test_the_worker_bounds_decoding_itself(tmp_path: Path) -> None:
    """The worker does not trust the daemon's check alone: audio over its bound is refused by the
    header, and a stream whose length nothing states (a pipe-like source with an open-ended WAV
    header) is stopped while decoding, as soon as it passes the bound."""
    import io
    import struct

    from ohmygpu.runtimes.whisper.worker import BadAudio, decode_bounded

    path = _wav(tmp_path / "ten-seconds.wav", 16000, 2, 16000 * 2 * 10)
    assert len(decode_bounded(str(path), 16000, max_seconds=20)) == 160_000  # the control
    with pytest.raises(BadAudio, match="10 s long, over the limit of 5 s"):
        decode_bounded(str(path), 16000, max_seconds=5)
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)  # "streaming": no length

    class Pipe(io.RawIOBase):
        def __init__(self, content: bytes) -> None:
            self.body = io.BytesIO(content)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
            chunk = self.body.read(len(buffer))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    assert len(decode_bounded(Pipe(bytes(data)), 16000, max_seconds=20)) == 160_000
    with pytest.raises(BadAudio, match="over the limit of 5 s"):
        decode_bounded(Pipe(bytes(data)), 16000, max_seconds=5)
    with pytest.raises(BadAudio, match="cannot be decoded") as e:
        decode_bounded(str(tmp_path / "missing.wav"), 16000, max_seconds=5)
    assert str(tmp_path) not in str(e.value)


def test_mcp_transcribe_reads_only_regular_files_with_a_bound(wd: DaemonProc, tmp_path: Path) -> None:
    """A FIFO hung the whole MCP server and /dev/zero was read until memory ran out: now each is
    a tool error at once, and the server answers the next call."""
    import sys

    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    big = tmp_path / "big.wav"
    with open(big, "wb") as f:
        f.truncate(3 << 20)  # sparse, over the 2 MiB limit
    zero_link = tmp_path / "zero.wav"
    zero_link.symlink_to("/dev/zero")
    (tmp_path / "dir.wav").mkdir()
    paths = [fifo, Path("/dev/zero"), zero_link, tmp_path / "dir.wav", big]

    async def session() -> tuple[list[Any], Any, float]:
        env = {**wd.env, "OMG_MAX_AUDIO_MB": "2"}
        params = StdioServerParameters(command=sys.executable, args=["-m", "ohmygpu.cli.main", "mcp"], env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            started = time.monotonic()
            with anyio.fail_after(30):
                results = [await s.call_tool("transcribe", {"path": str(p)}) for p in paths]
                models = await s.call_tool("list_models", {})
            return results, models, time.monotonic() - started

    results, models, took = anyio.run(session)
    texts = ["".join(getattr(c, "text", "") for c in r.content) for r in results]
    assert all(r.is_error for r in results), texts
    assert all("not a regular file" in t for t in texts[:4]), texts
    assert "over the 2 MiB limit" in texts[4], texts
    assert all(str(tmp_path) not in t for t in texts), texts
    assert not models.is_error and "whisper-tiny.en" in "".join(getattr(c, "text", "") for c in models.content)
    assert took < 20, took
