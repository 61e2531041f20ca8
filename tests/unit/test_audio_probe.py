"""The upload check refuses whatever is not audio with one recognisable message, whichever
way FFmpeg fails on it (no format found, a format with no audio stream, a broken stream)."""

from __future__ import annotations

import random
import wave
from pathlib import Path

import pytest
from ohmygpu.core.audio import probe
from ohmygpu.core.errors import InvalidArgument

from tests.helpers import import_hook


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_are_not_audio(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "upload.wav"
    path.write_bytes(random.Random(seed).randbytes(20_000))
    with pytest.raises(InvalidArgument, match="not audio") as e:
        probe(path)
    assert e.value.param == "file"


def test_text_file_with_an_audio_name_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("just some notes, no sound\n" * 100)
    with pytest.raises(InvalidArgument, match="not audio"):
        probe(path)


def test_a_real_wav_probes(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x10" * 24000)
    info = probe(path)
    assert info.sample_rate == 16000 and abs(info.duration_s - 1.5) < 0.01 and info.codec == "pcm_s16le"


def hostile_decoder(tmp_path: Path) -> Path:
    """A PYTHONPATH dir whose sitecustomize makes PyAV's `av.open` misbehave on files whose first
    bytes say so, the way a decoder bug on a hostile upload does: CRASH (SIGSEGV), HANG, HOG (all
    the memory it can get). Other files open normally. Any process started with it is affected,
    the daemon included if it ever parses an upload itself."""
    return import_hook(tmp_path / "hostile-decoder", "av", '''
def patch(module):
    import os, signal, time
    real = module.open

    def hostile(file, *args, **kwargs):
        try:
            with open(file, "rb") as f:
                head = f.read(5)
        except (TypeError, OSError):
            head = b""
        if head == b"CRASH":
            os.kill(os.getpid(), signal.SIGSEGV)
        if head == b"HANG\\n":
            time.sleep(3600)
        if head == b"HOG\\n\\n":
            hog = []
            while True:
                hog.append(bytearray(64 << 20))
        return real(file, *args, **kwargs)

    module.open = hostile
''')


def _tone(path: Path, seconds: float = 1.5, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x10" * int(seconds * rate))
    return path


async def test_the_child_probe_answers_as_the_probe_does(tmp_path: Path) -> None:
    from ohmygpu.core.audio_probe import probe_isolated

    tone = _tone(tmp_path / "tone.wav")
    assert await probe_isolated(tone) == probe(tone)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(random.Random(1).randbytes(20_000))
    with pytest.raises(InvalidArgument, match="not audio") as e:
        await probe_isolated(junk)
    assert e.value.param == "file" and str(tmp_path) not in e.value.message
    # The length limit, by the header: 8 KB at 100 Hz is 40 s of sound.
    with pytest.raises(InvalidArgument, match="OMG_MAX_AUDIO_SECONDS"):
        await probe_isolated(_tone(tmp_path / "claims.wav", seconds=40, rate=100), max_seconds=30)
    assert (await probe_isolated(tone, max_seconds=30)).duration_s == pytest.approx(1.5)


@pytest.mark.parametrize("head,words", [(b"CRASH", "the decoder crashed on it"),
                                        (b"HANG\n", "took over 2 s"),
                                        (b"HOG\n\n", "more memory than allowed")])
async def test_a_decoder_that_crashes_hangs_or_hogs_costs_one_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: bytes, words: str) -> None:
    """The check runs in a bounded child: whatever the decoder does to it, the caller gets a
    400 that says what happened (no path, no FFmpeg words) and lives on."""
    from ohmygpu.core.audio_probe import probe_isolated

    monkeypatch.setenv("PYTHONPATH", str(hostile_decoder(tmp_path)))
    hostile = tmp_path / "upload.wav"
    hostile.write_bytes(head + random.Random(2).randbytes(4000))
    with pytest.raises(InvalidArgument) as e:
        # Only the hang waits for the clock; the others get room to show what they do on a
        # loaded machine (a hog slowed down must reach the memory limit, not the time limit).
        await probe_isolated(hostile, timeout_s=2 if head.startswith(b"HANG") else 30, memory_mb=512)
    assert words in e.value.message and "send wav" in e.value.message, e.value.message
    assert e.value.param == "file" and str(tmp_path) not in e.value.message
    assert await probe_isolated(_tone(tmp_path / "tone.wav"), timeout_s=5) == probe(_tone(tmp_path / "t2.wav"))
