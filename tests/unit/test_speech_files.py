"""Text to speech models told from their files (core/speech_files.py): Piper voices, Kokoro
folders, broken ones refused; and the daemon's speech rules (daemon/speech.py): tts-1, voices,
bounds."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument, InvalidModelFile
from ohmygpu.core.kinds import classify_files, format_of
from ohmygpu.core.settings import Settings
from ohmygpu.core.speech_files import find_speech, voices_of
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.speech import check_speak, list_voices, tts_model
from ohmygpu.runtime.v1 import runtime_pb2

PIPER_CONFIG = {"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-gb"}, "phoneme_type": "espeak",
                "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3]}, "dataset": "tester"}


def piper_files(tmp: Path, config: dict | None = None, name: str = "en_GB-tester-low") -> Path:
    onnx = tmp / f"{name}.onnx"
    onnx.write_bytes(b"not read at add time")
    (tmp / f"{name}.onnx.json").write_text(json.dumps(PIPER_CONFIG if config is None else config))
    return onnx


def kokoro_files(tmp: Path, voices: tuple[str, ...] = ("af_heart", "jm_kumo")) -> Path:
    (tmp / "kokoro-v1.0.onnx").write_bytes(b"weights")
    (tmp / "vocab.json").write_text(json.dumps({"vocab": {"a": 43, " ": 16}}))
    with zipfile.ZipFile(tmp / "voices-v1.0.bin", "w") as z:  # kokoro-onnx's voices file: an npz
        for v in voices:
            z.writestr(f"{v}.npy", b"\x93NUMPY")
    return tmp


def test_a_piper_voice_is_found_with_its_config(tmp_path: Path) -> None:
    onnx = piper_files(tmp_path)
    files = {p.name: p for p in tmp_path.iterdir()}
    main, info = find_speech(files)
    assert main == onnx.name and info.engine == "piper" and list(info.voices) == ["tester"]
    assert info.sample_rate == 22050 and info.language == "en-gb"
    assert classify_files(files) == (assets_pb2.MODEL_KIND_TTS, assets_pb2.ARTIFACT_FORMAT_ONNX, onnx.name)
    assert format_of("x/voice.ONNX") == assets_pb2.ARTIFACT_FORMAT_ONNX


def test_a_multi_speaker_piper_voice_lists_its_speakers(tmp_path: Path) -> None:
    config = {**PIPER_CONFIG, "speaker_id_map": {"b": 1, "a": 0, "c": 2}}
    piper_files(tmp_path, config)
    _, info = find_speech({p.name: p for p in tmp_path.iterdir()})
    assert list(info.voices) == ["a", "b", "c"]


@pytest.mark.parametrize("config", [
    {**PIPER_CONFIG, "phoneme_id_map": {}},
    {**PIPER_CONFIG, "audio": {"sample_rate": 3}},
    {**PIPER_CONFIG, "phoneme_type": "text"},
    ["not", "an", "object"],
])
def test_a_broken_piper_config_is_refused(tmp_path: Path, config: object) -> None:
    piper_files(tmp_path, config)  # type: ignore[arg-type]
    with pytest.raises(InvalidModelFile):
        find_speech({p.name: p for p in tmp_path.iterdir()})


def test_a_kokoro_folder_is_found_with_voices_from_the_zip(tmp_path: Path) -> None:
    kokoro_files(tmp_path)
    files = {p.name: p for p in tmp_path.iterdir()}
    main, info = find_speech(files)
    assert main == "kokoro-v1.0.onnx" and info.engine == "kokoro" and info.sample_rate == 24000
    assert list(info.voices) == ["af_heart", "jm_kumo"] and info.language == "en-us"
    record = assets_pb2.InstallRecord(name="k", speech=info)
    assert [(v.id, v.language, v.gender) for v in voices_of(record)] == [
        ("af_heart", "en-us", "female"), ("jm_kumo", "ja", "male")]


def test_a_kokoro_folder_with_a_broken_voices_file_is_refused(tmp_path: Path) -> None:
    kokoro_files(tmp_path)
    (tmp_path / "voices-v1.0.bin").write_bytes(b"not a zip")
    with pytest.raises(InvalidModelFile):
        find_speech({p.name: p for p in tmp_path.iterdir()})


def test_an_onnx_alone_or_with_another_models_config_is_not_speech(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert find_speech({"model.onnx": tmp_path / "model.onnx"}) is None
    kokoro_files(tmp_path)
    (tmp_path / "vocab.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert find_speech({p.name: p for p in tmp_path.iterdir()}) is None
    (tmp_path / "config.json").write_text(json.dumps({"vocab": {"a": 1}}))  # kokoro-onnx's config.json
    assert find_speech({p.name: p for p in tmp_path.iterdir()})[1].engine == "kokoro"


def test_the_store_registers_voices_and_refuses_an_onnx_without_config(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    voice = tmp_path / "v"
    voice.mkdir()
    record = store.add_local(piper_files(voice))
    assert record.name == "en_gb-tester-low" and record.kind == assets_pb2.MODEL_KIND_TTS
    assert record.speech.engine == "piper" and len(record.artifacts) == 2
    k = tmp_path / "k"
    k.mkdir()
    assert store.add_local(kokoro_files(k), name="kokoro").speech.voices == ["af_heart", "jm_kumo"]
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(voice / "en_GB-tester-low.onnx", lone / "x.onnx")
    with pytest.raises(InvalidModelFile):
        store.add_local(lone / "x.onnx")


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "home")
    d = tmp_path / "k"
    d.mkdir()
    store.add_local(kokoro_files(d), name="kokoro")
    v = tmp_path / "v"
    v.mkdir()
    store.add_local(piper_files(v), name="alice")
    return store


def test_openai_model_names_mean_the_first_speech_model(store: ModelStore) -> None:
    settings = Settings.load(environ={})
    assert tts_model("tts-1", settings, store) == tts_model("", settings, store) == "alice"
    assert tts_model("kokoro", settings, store) == "kokoro"
    assert tts_model("gpt-4o-mini-tts", Settings.load(environ={"OMG_TTS_MODEL": "kokoro"}), store) == "kokoro"


def test_no_speech_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no text to speech model is installed"):
        tts_model("tts-1", Settings.load(environ={}), ModelStore(tmp_path))


def test_check_speak(store: ModelStore) -> None:
    settings = Settings.load(environ={"OMG_MAX_SPEECH_CHARS": "10"})
    record = store.get("kokoro")
    req = runtime_pb2.SpeakRequest(input="hi", voice="alloy")
    check_speak(req, record, settings)
    assert req.voice == ""  # OpenAI's voice: the model's first
    check_speak(runtime_pb2.SpeakRequest(input="hi", voice="jm_kumo"), record, settings)
    for bad, param in ((runtime_pb2.SpeakRequest(input=" "), "input"),
                       (runtime_pb2.SpeakRequest(input="x" * 11), "input"),
                       (runtime_pb2.SpeakRequest(input="hi", speed=0.1), "speed"),
                       (runtime_pb2.SpeakRequest(input="hi", voice="zz"), "voice")):
        with pytest.raises(InvalidArgument) as e:
            check_speak(bad, record, settings)
        assert e.value.param == param


def test_list_voices(store: ModelStore) -> None:
    assert [(v.id, v.model) for v in list_voices(store).voices] == [
        ("tester", "alice"), ("af_heart", "kokoro"), ("jm_kumo", "kokoro")]
    assert [v.id for v in list_voices(store, "kokoro").voices] == ["af_heart", "jm_kumo"]
