"""The Runtime contract on a real TTS worker process over its Unix socket: a Piper voice and a
Kokoro model (from PyPI, see tests/tts_models.py) run by onnxruntime: load, voices, audio in
every encoding streamed sentence by sentence, speed, bad input, cancellation."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ohmygpu.core.store import ModelStore
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

from tests.contract.test_runtime_llamacpp import WorkerProc

pytestmark = pytest.mark.slow
THREE = "The first sentence is short. Here comes the second one. And this is the third."


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def piper(tmp_path_factory: pytest.TempPathFactory, store: ModelStore, piper_voice_path: Path,
          ) -> Iterator[WorkerProc]:
    w = WorkerProc(tmp_path_factory.mktemp("worker"), store.add_local(piper_voice_path, name="joe"),
                   mode=run_spec_pb2.MODE_SPEECH, module="ohmygpu.runtimes.tts.worker", threads=1)
    yield w
    w.close()


@pytest.fixture(scope="module")
def kokoro(tmp_path_factory: pytest.TempPathFactory, store: ModelStore, kokoro_path: Path,
           ) -> Iterator[WorkerProc]:
    w = WorkerProc(tmp_path_factory.mktemp("worker"), store.add_local(kokoro_path, name="kokoro-ja"),
                   mode=run_spec_pb2.MODE_SPEECH, module="ohmygpu.runtimes.tts.worker", threads=1)
    yield w
    w.close()


def speak(w: WorkerProc, text: str, **kw) -> list[runtime_pb2.SpeakResponse]:
    return list(w.stub.Speak(runtime_pb2.SpeakRequest(input=text, **kw), timeout=120))


def decoded_seconds(data: bytes) -> tuple[float, int]:
    """(duration, sample rate) of encoded audio, decoded back by FFmpeg."""
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate, frames[0].sample_rate


def test_capabilities_status_and_voices(piper: WorkerProc, kokoro: WorkerProc) -> None:
    caps = piper.stub.GetCapabilities(runtime_pb2.GetCapabilitiesRequest())
    assert caps.runtime == "tts" and list(caps.modes) == [run_spec_pb2.MODE_SPEECH] and not caps.gpu
    assert piper.progress[-1].done and piper.progress[-1].memory_bytes > 50_000_000
    st = piper.stub.GetStatus(runtime_pb2.GetStatusRequest())
    assert st.state == runtime_pb2.WORKER_STATE_READY and st.model == "joe" and st.threads == 1
    voices = piper.stub.ListVoices(runtime_pb2.ListVoicesRequest()).voices
    assert [(v.id, v.language, v.model) for v in voices] == [("joe", "en-us", "joe")]
    voices = {v.id: v for v in kokoro.stub.ListVoices(runtime_pb2.ListVoicesRequest()).voices}
    assert set(voices) == {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
    assert voices["jm_kumo"].gender == "male" and voices["jf_alpha"].gender == "female"
    assert {v.language for v in voices.values()} == {"ja"}


def test_streams_one_message_per_sentence_then_done(piper: WorkerProc) -> None:
    arrivals, msgs = [], []
    for m in piper.stub.Speak(runtime_pb2.SpeakRequest(input=THREE, encoding=runtime_pb2.AUDIO_ENCODING_PCM),
                              timeout=120):
        arrivals.append(time.monotonic())
        msgs.append(m)
    assert len(msgs) == 4 and msgs[-1].done and not any(m.done for m in msgs[:-1])
    # Sentences arrive as they are synthesized, not all at once at the end.
    assert arrivals[2] - arrivals[0] > 0.1
    assert [m.characters for m in msgs[:3]] == sorted(m.characters for m in msgs[:3])
    assert msgs[-1].characters == len(THREE)
    assert all(m.sample_rate == 22050 and m.content_type == "audio/pcm" for m in msgs)
    pcm = b"".join(m.audio for m in msgs)
    assert len(pcm) / 2 / 22050 == pytest.approx(msgs[-1].seconds, abs=0.01)
    assert 3 < msgs[-1].seconds < 12


@pytest.mark.parametrize("encoding,container,rate", [
    (runtime_pb2.AUDIO_ENCODING_MP3, "mp3", 22050),
    (runtime_pb2.AUDIO_ENCODING_OPUS, "ogg", 48000),
    (runtime_pb2.AUDIO_ENCODING_AAC, "aac", 22050),
    (runtime_pb2.AUDIO_ENCODING_FLAC, "flac", 22050),
    (runtime_pb2.AUDIO_ENCODING_WAV, "wav", 22050),
])
def test_every_encoding_decodes_to_the_audio_made(piper: WorkerProc, encoding: int, container: str,
                                                  rate: int) -> None:
    import av

    msgs = speak(piper, "Hello there. How are you today?", encoding=encoding)
    data = b"".join(m.audio for m in msgs)
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name.split(",")[0] == container
    seconds, decoded_rate = decoded_seconds(data)
    assert decoded_rate == rate == msgs[-1].sample_rate
    # Encoders pad a frame or two (mp3 and aac) at the start and end.
    assert seconds == pytest.approx(msgs[-1].seconds, abs=0.15)


def test_speed_changes_the_duration(piper: WorkerProc) -> None:
    pcm = runtime_pb2.AUDIO_ENCODING_PCM
    normal = speak(piper, "Speaking at my normal rate.", encoding=pcm)[-1].seconds
    fast = speak(piper, "Speaking at my normal rate.", encoding=pcm, speed=2.0)[-1].seconds
    assert fast < normal * 0.7


@pytest.mark.parametrize("kw,words", [
    ({"text": "   "}, "empty"),
    ({"text": "hi", "voice": "alloy-nope"}, "voice 'alloy-nope' is not one of this model's: joe"),
    ({"text": "hi", "speed": 9.0}, "speed must be between 0.25 and 4"),
    ({"text": "hi", "language": "xx-nope"}, "no voice for language 'xx-nope'"),
])
def test_bad_requests_are_invalid_argument_and_the_worker_lives(piper: WorkerProc, kw: dict, words: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        speak(piper, **kw)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.value.details()
    assert piper.stub.Health(runtime_pb2.HealthRequest()).state == runtime_pb2.WORKER_STATE_READY


def test_cancel_mid_stream_then_the_next_request_works(piper: WorkerProc) -> None:
    call = piper.stub.Speak(runtime_pb2.SpeakRequest(input=THREE * 3, encoding=runtime_pb2.AUDIO_ENCODING_PCM),
                            timeout=120)
    next(call)
    call.cancel()
    started = time.monotonic()
    msgs = speak(piper, "Still here.", encoding=runtime_pb2.AUDIO_ENCODING_PCM)
    assert msgs[-1].done and msgs[-1].seconds > 0.3
    # The cancelled stream stopped at its next sentence, not after all nine.
    assert time.monotonic() - started < 6


def test_kokoro_speaks_japanese_kana_and_refuses_kanji(kokoro: WorkerProc) -> None:
    import numpy as np

    msgs = speak(kokoro, "こんにちは。", voice="jm_kumo", encoding=runtime_pb2.AUDIO_ENCODING_PCM)
    assert msgs[-1].done and msgs[-1].sample_rate == 24000 and 0.5 < msgs[-1].seconds < 4
    samples = np.frombuffer(b"".join(m.audio for m in msgs), dtype="<i2")
    assert np.abs(samples).max() > 3000  # speech, not silence
    with pytest.raises(grpc.RpcError) as e:
        speak(kokoro, "今日は")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kanji" in e.value.details()
