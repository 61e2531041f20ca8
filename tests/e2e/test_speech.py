"""Text to speech through the daemon: OpenAI's /v1/audio/speech with the official client, in
every format (decoded back by FFmpeg, durations checked), streamed and as SSE, round trips
through the whisper worker (the words come back), bad input in OpenAI's envelope (and the
worker lives), a client that goes away, the voices, `omg say`, and MCP's speak tool."""

from __future__ import annotations

import base64
import io
import json
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from tests.helpers import SENTENCE, DaemonProc, new_daemon, word_error_rate, worker_pid

pytestmark = pytest.mark.slow
LONG = " ".join(f"This is sentence number {n} of a long text." for n in range(1, 13))


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory, whisper_path: Path, piper_voice_path: Path,
       kokoro_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("tts"), extra_env={"OMG_NUM_THREADS": "1"}).start()
    for path, name in ((whisper_path, "whisper-tiny.en"), (piper_voice_path, "joe"), (kokoro_path, "kokoro-ja")):
        r = d.omg("model", "add", str(path), "--name", name)
        assert r.returncode == 0, r.stderr
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def client(sd: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sd.http}/v1", api_key="unused", max_retries=0)


def decoded(data: bytes) -> tuple[str, float, int]:
    """(container, seconds, sample rate) of encoded audio, decoded back by FFmpeg."""
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(audio=0))
        name = c.format.name.split(",")[0]
    return name, sum(f.samples for f in frames) / frames[0].sample_rate, frames[0].sample_rate


def transcribe(client: openai.OpenAI, data: bytes, name: str) -> str:
    return client.audio.transcriptions.create(model="whisper-tiny.en", file=(name, data)).text


def test_models_and_voices(sd: DaemonProc) -> None:
    listed = {m["name"]: m for m in httpx.get(f"{sd.http}/v1/store/models").json()["models"]}
    assert listed["joe"]["kind"] == listed["kokoro-ja"]["kind"] == "MODEL_KIND_TTS"
    assert listed["joe"]["format"] == "ARTIFACT_FORMAT_ONNX"
    voices = httpx.get(f"{sd.http}/v1/audio/voices").json()
    assert voices["voices"] == ["joe", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert voices["data"][0] == {"id": "joe", "name": "joe", "language": "en-us", "gender": "", "model": "joe",
                                 "object": "voice"}
    only = httpx.get(f"{sd.http}/v1/audio/voices", params={"model": "kokoro-ja"}).json()["data"]
    assert {v["gender"] for v in only} == {"female", "male"} and {v["language"] for v in only} == {"ja"}
    native = httpx.get(f"{sd.http}/v1/omg/voices").json()["voices"]
    assert [v["id"] for v in native][:1] == ["joe"]
    out = sd.omg("voices").stdout
    assert "jm_kumo" in out and "male" in out and "joe" in out


def test_openai_client_speaks_and_whisper_hears_the_words(client: openai.OpenAI) -> None:
    # tts-1 and OpenAI's voice names mean the first speech model and its first voice.
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav")
    data = speech.content
    container, seconds, rate = decoded(data)
    assert container == "wav" and rate == 22050 and 3 < seconds < 10
    assert word_error_rate(SENTENCE, transcribe(client, data, "speech.wav")) < 0.25


@pytest.mark.parametrize("fmt,container,media", [
    ("mp3", "mp3", "audio/mpeg"), ("opus", "ogg", "audio/ogg"), ("aac", "aac", "audio/aac"),
    ("flac", "flac", "audio/flac"), ("wav", "wav", "audio/wav"), ("pcm", "", "audio/pcm"),
])
def test_every_format_streams_and_decodes(client: openai.OpenAI, fmt: str, container: str, media: str) -> None:
    text = "Every format carries the same words."
    with client.audio.speech.with_streaming_response.create(model="joe", voice="joe", input=text,
                                                             response_format=fmt) as r:
        assert r.headers["content-type"] == media
        data = b"".join(r.iter_bytes())
    if fmt == "pcm":
        seconds = len(data) / 2 / 22050
    else:
        got, seconds, _ = decoded(data)
        assert got == container
    assert 1.2 < seconds < 5, seconds
    if fmt == "mp3":  # a lossy format still carries the words
        assert word_error_rate(text, transcribe(client, data, "speech.mp3")) < 0.3


def test_audio_streams_as_it_is_made(sd: DaemonProc) -> None:
    arrivals = []
    with httpx.stream("POST", f"{sd.http}/v1/audio/speech", timeout=120,
                      json={"model": "joe", "input": LONG, "voice": "joe", "response_format": "pcm"}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            if chunk:
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] > 1.0  # sentence by sentence, not all at the end


def test_sse_stream_format(sd: DaemonProc) -> None:
    events = []
    with httpx.stream("POST", f"{sd.http}/v1/audio/speech", timeout=120,
                      json={"model": "joe", "input": "One. Two.", "voice": "joe", "response_format": "wav",
                            "stream_format": "sse"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len("One. Two.")
    _, seconds, _ = decoded(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]))
    assert 0.5 < seconds < 4


def test_speed(client: openai.OpenAI) -> None:
    def seconds(speed: float) -> float:
        pcm = client.audio.speech.create(model="joe", voice="joe", input="Speed changes duration.",
                                         response_format="pcm", speed=speed).content
        return len(pcm) / 2 / 22050
    assert seconds(2.0) < seconds(1.0) * 0.7


@pytest.mark.parametrize("body,param,words", [
    ({"input": ""}, "input", "must not be empty"),
    ({"input": "hi", "voice": "nobody"}, "voice", "voice 'nobody' is not a voice of model 'joe'"),
    ({"input": "x" * (1 << 20)}, "input", "OMG_MAX_SPEECH_CHARS"),
    ({"input": "hi", "response_format": "ogg"}, "response_format", "must be one of mp3, opus"),
    ({"input": "hi", "speed": 10}, "speed", "between 0.25 and 4"),
    ({"input": "hi", "instructions": "cheerful"}, "instructions", "not supported"),
    ({"input": "hi", "model": "whisper-tiny.en"}, "model", "cannot speak text"),
    ({"input": "今日は", "model": "kokoro-ja", "voice": "jf_alpha"}, None, "kanji"),
])
def test_bad_input_is_a_400_in_openai_format(sd: DaemonProc, body: dict[str, Any], param: str | None,
                                             words: str) -> None:
    before = worker_pid(sd, "joe") if _loaded(sd, "joe") else None
    r = httpx.post(f"{sd.http}/v1/audio/speech", json={"model": "joe", "voice": "", **body}, timeout=120)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]
    assert error["param"] == param
    if before is not None:
        assert worker_pid(sd, "joe") == before  # nothing was killed


def _loaded(sd: DaemonProc, model: str) -> bool:
    return any(m["name"] == model for m in json.loads(sd.omg("ps", "--json").stdout).get("models", []))


def test_openai_client_sees_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="joe", voice="nobody", input="hi")
    assert e.value.body["param"] == "voice"


def test_client_that_goes_away_stops_the_synthesis(sd: DaemonProc, client: openai.OpenAI) -> None:
    with httpx.stream("POST", f"{sd.http}/v1/audio/speech", timeout=120,
                      json={"model": "joe", "input": LONG * 3, "voice": "joe", "response_format": "pcm"}) as r:
        next(r.iter_raw())
    started = time.monotonic()
    client.audio.speech.create(model="joe", voice="joe", input="Next.", response_format="pcm")
    assert time.monotonic() - started < 5  # not queued behind 36 sentences


def test_kokoro_japanese_through_the_api(client: openai.OpenAI) -> None:
    data = client.audio.speech.create(model="kokoro-ja", voice="jm_kumo", input="こんにちは。",
                                      response_format="flac").content
    container, seconds, rate = decoded(data)
    assert container == "flac" and rate == 24000 and 0.5 < seconds < 4


def test_omg_say_writes_a_file(sd: DaemonProc, tmp_path: Path, client: openai.OpenAI) -> None:
    out = tmp_path / "out.wav"
    r = sd.omg("say", "The quick brown fox jumps over the lazy dog.", "-o", str(out), "--model", "joe")
    assert r.returncode == 0, r.stderr
    with wave.open(str(out)) as w:  # the finished file's header has its real length
        assert w.getframerate() == 22050 and 1.5 < w.getnframes() / 22050 < 6
    assert out.stat().st_size == 44 + w.getnframes() * 2
    assert word_error_rate("The quick brown fox jumps over the lazy dog.",
                           transcribe(client, out.read_bytes(), "out.wav")) < 0.25
    mp3 = tmp_path / "out.mp3"
    assert sd.omg("say", "Hello.", "-o", str(mp3), "-q").returncode == 0
    assert decoded(mp3.read_bytes())[0] == "mp3"
    bad = sd.omg("say", "Hello.", "-o", str(tmp_path / "x.wav"), "--voice", "nobody")
    assert bad.returncode != 0 and "nobody" in bad.stderr and not (tmp_path / "x.wav").exists()


def test_mcp_speak_tool(sd: DaemonProc) -> None:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def session() -> tuple[Any, Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "ohmygpu.cli.main", "mcp"], env=sd.env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return (await s.call_tool("speak", {"text": "Hello from the tool.", "model": "joe"}),
                    await s.call_tool("speak", {"text": "hi", "voice": "nobody"}))

    ok, bad = anyio.run(session)
    assert not ok.is_error, ok.content
    audio = ok.content[0]
    assert audio.type == "audio" and audio.mime_type == "audio/wav"
    container, seconds, _ = decoded(base64.b64decode(audio.data))
    assert container == "wav" and 0.8 < seconds < 5
    assert bad.is_error and "nobody" in "".join(getattr(c, "text", "") for c in bad.content)
