"""Speech to text through the daemon: OpenAI's audio API with the official client, formats,
streaming, bad input, model kinds, the CLI, and whisper budgeted beside a chat model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from ohmygpu.api.v1 import audio_pb2, audio_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2

from tests.helpers import PARAGRAPH, SENTENCE, DaemonProc, new_daemon, run_in_pty, word_error_rate

pytestmark = pytest.mark.slow


def _add_models(d: DaemonProc, gguf: Path, whisper: Path) -> None:
    for path, name in ((gguf, "smollm2"), (whisper, "whisper-tiny.en")):
        r = d.omg("model", "add", str(path), "--name", name)
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, whisper_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("speech"), extra_env={"OMG_MAX_AUDIO_MB": "2"}).start()
    _add_models(d, gguf_path, whisper_path)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def client(sd: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sd.http}/v1", api_key="unused", max_retries=0)


def test_model_kinds_in_the_store(sd: DaemonProc) -> None:
    listed = {m["name"]: m for m in httpx.get(f"{sd.http}/v1/store/models").json()["models"]}
    assert listed["whisper-tiny.en"]["kind"] == "MODEL_KIND_WHISPER"
    assert listed["whisper-tiny.en"]["format"] == "ARTIFACT_FORMAT_CT2"
    assert listed["smollm2"]["kind"] == "MODEL_KIND_LLM"
    out = sd.omg("model", "list").stdout
    assert re.search(r"whisper-tiny\.en\s+whisper\s+ct2", out), out


def test_openai_client_transcribes_every_format(client: openai.OpenAI, audio: dict[str, Path]) -> None:
    for fmt in ("wav", "mp3", "flac", "ogg", "m4a", "webm"):
        with open(audio[fmt], "rb") as f:
            result = client.audio.transcriptions.create(model="whisper-tiny.en", file=f)
        assert word_error_rate(SENTENCE, result.text) < 0.25, (fmt, result.text)


def test_whisper_1_maps_to_the_installed_whisper_model(client: openai.OpenAI, audio: dict[str, Path]) -> None:
    with open(audio["wav"], "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and "fox" in text.lower()


def test_verbose_json_segments_and_words(client: openai.OpenAI, audio: dict[str, Path]) -> None:
    with open(audio["long"], "rb") as f:
        v = client.audio.transcriptions.create(model="whisper-tiny.en", file=f, response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"])
    assert v.language == "english" and 30 < v.duration < 33
    assert word_error_rate(PARAGRAPH, v.text) < 0.15, v.text
    assert len(v.segments) >= 2 and [s.id for s in v.segments] == list(range(len(v.segments)))
    assert all(0 <= s.start < s.end <= v.duration + 0.5 for s in v.segments)
    assert len(v.words) > 50
    starts = [w.start for w in v.words]
    assert starts == sorted(starts) and all(w.end <= v.duration + 0.5 for w in v.words)


def _stamps(text: str, sep: str) -> list[float]:
    out = []
    for h, m, s, ms in re.findall(rf"(\d\d):(\d\d):(\d\d){re.escape(sep)}(\d\d\d)", text):
        out.append(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000)
    return out


def test_srt_and_vtt_timestamps_are_ordered_and_inside_the_audio(sd: DaemonProc, audio: dict[str, Path]) -> None:
    for fmt, sep in (("srt", ","), ("vtt", ".")):
        with open(audio["long"], "rb") as f:
            r = httpx.post(f"{sd.http}/v1/audio/transcriptions", files={"file": f},
                           data={"model": "whisper-tiny.en", "response_format": fmt}, timeout=120)
        assert r.status_code == 200, r.text
        if fmt == "vtt":
            assert r.text.startswith("WEBVTT") and r.headers["content-type"].startswith("text/vtt")
        else:
            assert r.text.startswith("1\n00:00:")
        stamps = _stamps(r.text, sep)
        assert len(stamps) >= 4 and stamps == sorted(stamps) and stamps[-1] <= 32, stamps


def test_streaming_yields_deltas_before_done(client: openai.OpenAI, audio: dict[str, Path]) -> None:
    with open(audio["long"], "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-tiny.en", file=f, stream=True))
    types = [e.type for e in events]
    assert types.count("transcript.text.delta") >= 2 and types[-1] == "transcript.text.done"
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert words_of(deltas) == words_of(events[-1].text)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_translation_endpoint(client: openai.OpenAI, audio: dict[str, Path]) -> None:
    with open(audio["wav"], "rb") as f:
        result = client.audio.translations.create(model="whisper-tiny.en", file=f)
    assert "fox" in result.text.lower()


def _post(sd: DaemonProc, path: Path | bytes, name: str = "a.wav", **data: str) -> httpx.Response:
    content = path if isinstance(path, bytes) else path.read_bytes()
    return httpx.post(f"{sd.http}/v1/audio/transcriptions", files={"file": (name, content)},
                      data={"model": "whisper-tiny.en", **data}, timeout=60)


def test_bad_input_gets_openai_errors(sd: DaemonProc, audio: dict[str, Path]) -> None:
    for key, fragment in (("empty", "empty"), ("random", "not audio"), ("silent0", "0 seconds")):
        r = _post(sd, audio[key])
        assert r.status_code == 400, (key, r.text)
        err = r.json()["error"]
        assert fragment in err["message"] and err["type"] == "invalid_request_error", err
    r = _post(sd, audio["wav"], response_format="docx")
    assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]
    r = _post(sd, audio["wav"], temperature="hot")
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = httpx.post(f"{sd.http}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = httpx.post(f"{sd.http}/v1/audio/transcriptions", json={"model": "whisper-tiny.en"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


def test_upload_over_the_limit_is_413(sd: DaemonProc, audio: dict[str, Path]) -> None:
    big = audio["wav"].read_bytes() * 20  # > OMG_MAX_AUDIO_MB=2
    assert len(big) > 2 << 20
    r = _post(sd, big)
    assert r.status_code == 413 and r.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(5):
            yield b"\0" * (1 << 20)
        yield b"\r\n--xyz--\r\n"
    r = httpx.post(f"{sd.http}/v1/audio/transcriptions", content=chunked(),
                   headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413
    # Nothing of either upload is left behind.
    assert list((sd.home / "uploads").iterdir()) == []


def test_wrong_model_kind_is_refused_both_ways(sd: DaemonProc, client: openai.OpenAI, audio: dict[str, Path]) -> None:
    r = _post(sd, audio["wav"], model="smollm2")
    assert r.status_code == 400 and "is an LLM" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="whisper-tiny.en", messages=[{"role": "user", "content": "hi"}])
    assert "whisper" in str(e.value) and "cannot chat" in str(e.value)
    r = httpx.post(f"{sd.http}/api/chat", json={"model": "whisper-tiny.en",
                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "cannot chat" in r.json()["error"]
    r = httpx.post(f"{sd.http}/v1/embeddings", json={"model": "whisper-tiny.en", "input": "hi"})
    assert r.status_code == 400 and "cannot embed" in r.json()["error"]["message"]


def test_grpc_transcribe_and_no_client_paths(sd: DaemonProc, audio: dict[str, Path]) -> None:
    stub = audio_pb2_grpc.AudioServiceStub(grpc.insecure_channel(sd.grpc_addr))
    msgs = list(stub.Transcribe(audio_pb2.TranscribeRequest(model="whisper-tiny.en",
                                                             audio=audio["flac"].read_bytes()), timeout=60))
    assert msgs[0].info.duration > 5 and "fox" in "".join(m.segment.text for m in msgs[1:]).lower()
    # The API's message has no path to name; a client that sends the worker's message (its
    # audio_path is field 8, reserved in the API's) names none the daemon reads.
    assert "audio_path" not in audio_pb2.TranscribeRequest.DESCRIPTOR.fields_by_name
    raw = grpc.insecure_channel(sd.grpc_addr).unary_stream(
        "/ohmygpu.api.v1.AudioService/Transcribe", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=runtime_pb2.TranscribeResponse.FromString)
    with pytest.raises(grpc.RpcError) as e:
        list(raw(runtime_pb2.TranscribeRequest(model="whisper-tiny.en", audio_path="/etc/passwd"), timeout=60))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in e.value.details()


def test_cli_transcribe(sd: DaemonProc, audio: dict[str, Path]) -> None:
    r = sd.omg("transcribe", str(audio["mp3"]), "--format", "srt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1\n00:00:00,") and "fox" in r.stdout.lower()
    r = sd.omg("transcribe", str(audio["wav"]), "--format", "verbose_json", "--word-timestamps")
    assert r.returncode == 0 and json.loads(r.stdout)["words"][0]["word"] == "The"
    # On a terminal: a progress bar in seconds of audio, then the transcript.
    status, screen = run_in_pty(["transcribe", str(audio["long"])], sd.env)
    assert status == 0 and "transcribing" in screen and re.search(r"[1-9]\d*/3\d s", screen), screen[-1500:]
    printed = [line for line in screen.replace("\r\n", "\n").split("\n") if line.strip()][-1].split("\r")[-1]
    assert word_error_rate(PARAGRAPH, printed) < 0.3, printed
    r = sd.omg("transcribe", str(audio["random"]))
    assert r.returncode == 1 and "not audio" in r.stderr
    r = sd.omg("transcribe", str(audio["wav"]), "--model", "smollm2")
    assert r.returncode == 1 and "cannot transcribe" in r.stderr


def test_chat_and_whisper_share_the_budget(tmp_path: Path, gguf_path: Path, whisper_path: Path,
                                          audio: dict[str, Path]) -> None:
    def loaded(d: DaemonProc) -> set[str]:
        return {m["name"].removesuffix(":latest") for m in httpx.get(f"{d.http}/api/ps").json()["models"]}

    def use_both(d: DaemonProc) -> None:
        r = httpx.post(f"{d.http}/api/chat", json={"model": "smollm2", "stream": False, "options": {"num_predict": 3},
                                                    "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        assert r.status_code == 200, r.text
        assert _post(d, audio["wav"]).status_code == 200

    roomy = new_daemon(tmp_path / "roomy", extra_env={"OMG_RAM_BUDGET_MB": "2000"}).start()
    try:
        _add_models(roomy, gguf_path, whisper_path)
        use_both(roomy)
        assert loaded(roomy) == {"smollm2", "whisper-tiny.en"}
    finally:
        roomy.stop()
    tight = new_daemon(tmp_path / "tight", extra_env={"OMG_RAM_BUDGET_MB": "450"}).start()
    try:
        _add_models(tight, gguf_path, whisper_path)
        use_both(tight)
        assert loaded(tight) == {"whisper-tiny.en"}  # the chat model, least recently used, made room
        with httpx.stream("GET", f"{tight.http}/v1/events", timeout=10) as r:
            for line in r.iter_lines():  # the recent history comes first
                if "evicted to load whisper-tiny.en" in line:
                    break
    finally:
        tight.stop()
