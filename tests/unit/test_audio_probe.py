"""The upload check refuses whatever is not audio with one recognisable message, whichever
way FFmpeg fails on it (no format found, a format with no audio stream, a broken stream)."""

from __future__ import annotations

import random
import wave
from pathlib import Path

import pytest
from ohmygpu.core.audio import probe
from ohmygpu.core.errors import InvalidArgument


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
