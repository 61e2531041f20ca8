"""Model kinds from files, the kind/mode check every API applies, transcript renderings."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument, InvalidModelFile
from ohmygpu.core.kinds import classify_files, ct2_spec_name, kind_of_architectures
from ohmygpu.core.store import ModelStore
from ohmygpu.core.transcripts import Transcript
from ohmygpu.daemon.orchestrator import check_mode, worker_key
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

K = assets_pb2


def _ct2(path: Path, spec: bytes) -> Path:
    path.write_bytes(struct.pack("<IH", 6, len(spec) + 1) + spec + b"\0" + struct.pack("<I", 3) + b"\0" * 64)
    return path


def test_ct2_spec_name_of_the_real_model(whisper_path: Path) -> None:
    assert ct2_spec_name(whisper_path / "model.bin") == "WhisperSpec"


def test_ct2_spec_name_rejects_other_files(tmp_path: Path) -> None:
    for data in (b"", b"\x01", b"GGUF" + b"\0" * 40, struct.pack("<IH", 6, 60000) + b"x" * 100):
        p = tmp_path / "model.bin"
        p.write_bytes(data)
        with pytest.raises(InvalidModelFile):
            ct2_spec_name(p)


def test_classify_files(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    whisper = {"model.bin": _ct2(tmp_path / "model.bin", b"WhisperSpec"), "config.json": config}
    assert classify_files(whisper) == (K.MODEL_KIND_WHISPER, K.ARTIFACT_FORMAT_CT2, "model.bin")
    _ct2(tmp_path / "model.bin", b"TransformerDecoderModelSpec")
    assert classify_files(whisper)[0] == K.MODEL_KIND_LLM
    st_config = tmp_path / "st.json"
    st_config.write_text(json.dumps({"architectures": ["BertModel"]}))
    st = {"model.safetensors": tmp_path / "x", "config.json": st_config}
    assert classify_files(st) == (K.MODEL_KIND_EMBEDDING, K.ARTIFACT_FORMAT_SAFETENSORS, "model.safetensors")
    assert classify_files({"README.md": tmp_path / "r"})[2] == ""


@pytest.mark.parametrize("archs,kind", [
    (["WhisperForConditionalGeneration"], K.MODEL_KIND_WHISPER),
    (["LlamaForCausalLM"], K.MODEL_KIND_LLM),
    (["XLMRobertaModel"], K.MODEL_KIND_EMBEDDING),
    (["NomicBertModel"], K.MODEL_KIND_EMBEDDING),
    ([], K.MODEL_KIND_UNSPECIFIED),
])
def test_kind_of_architectures(archs: list[str], kind: int) -> None:
    assert kind_of_architectures(archs) == kind


def test_store_registers_a_whisper_directory_in_place(tmp_path: Path, whisper_path: Path) -> None:
    store = ModelStore(tmp_path)
    rec = store.add_local(whisper_path, name="tiny")
    assert rec.kind == K.MODEL_KIND_WHISPER and rec.format == K.ARTIFACT_FORMAT_CT2
    assert rec.artifacts[0].filename == "model.bin" and rec.artifacts[0].format == K.ARTIFACT_FORMAT_CT2
    assert {a.filename for a in rec.artifacts} >= {"config.json", "tokenizer.json", "vocabulary.txt"}
    assert all(Path(a.local_path).parent == whisper_path for a in rec.artifacts)
    assert store.get("tiny").kind == K.MODEL_KIND_WHISPER
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(InvalidModelFile):
        store.add_local(empty)


def _record(kind: int) -> assets_pb2.InstallRecord:
    return assets_pb2.InstallRecord(name="m", kind=kind)


def test_check_mode_matrix() -> None:
    M = run_spec_pb2
    llm, emb, whisper = _record(K.MODEL_KIND_LLM), _record(K.MODEL_KIND_EMBEDDING), _record(K.MODEL_KIND_WHISPER)
    assert check_mode(llm, M.MODE_CHAT) == M.MODE_CHAT
    assert check_mode(llm, M.MODE_COMPLETION) == M.MODE_CHAT  # one worker for both
    assert check_mode(llm, M.MODE_EMBEDDINGS) == M.MODE_EMBEDDINGS  # as ollama allows
    assert check_mode(emb, M.MODE_EMBEDDINGS) == M.MODE_EMBEDDINGS
    assert check_mode(whisper, M.MODE_UNSPECIFIED) == M.MODE_TRANSCRIPTION
    assert check_mode(_record(K.MODEL_KIND_UNSPECIFIED), M.MODE_CHAT) == M.MODE_CHAT
    for record, mode, words in ((llm, M.MODE_TRANSCRIPTION, "an LLM"), (whisper, M.MODE_CHAT, "cannot chat"),
                                (emb, M.MODE_CHAT, "embedding model"), (whisper, M.MODE_EMBEDDINGS, "embed")):
        with pytest.raises(InvalidArgument) as e:
            check_mode(record, mode)
        assert words in e.value.message and e.value.param == "model"
    # Keys are (model, mode); their labels (events' subjects, logs) are as they always were.
    assert str(worker_key(llm, M.MODE_CHAT)) == "m"
    assert str(worker_key(llm, M.MODE_EMBEDDINGS)) == "m#embeddings"
    assert str(worker_key(emb, M.MODE_EMBEDDINGS)) == "m"
    assert worker_key(llm, M.MODE_EMBEDDINGS) != worker_key(llm, M.MODE_CHAT)
    assert {k.model for k in (worker_key(llm, M.MODE_CHAT), worker_key(llm, M.MODE_EMBEDDINGS))} == {"m"}


def _transcript() -> Transcript:
    t = Transcript()
    t.add(runtime_pb2.TranscribeResponse(info=runtime_pb2.TranscriptionInfo(language="en", duration=3725.5)))
    seg = runtime_pb2.Segment(id=0, start=0.0, end=1.5, text=" Hello there.")
    seg.words.add(word=" Hello", start=0.0, end=0.6, probability=0.9)
    t.add(runtime_pb2.TranscribeResponse(segment=seg))
    t.add(runtime_pb2.TranscribeResponse(segment=runtime_pb2.Segment(id=1, start=3723.25, end=3725.0,
                                                                      text=" Bye.")))
    return t


def test_transcript_renderings() -> None:
    t = _transcript()
    assert t.render("text") == "Hello there. Bye.\n"
    assert t.render("srt") == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                               "2\n01:02:03,250 --> 01:02:05,000\nBye.\n\n")
    assert t.render("vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    verbose = json.loads(t.render("verbose_json", words=True))
    assert verbose["language"] == "english" and verbose["duration"] == 3725.5
    assert [s["id"] for s in verbose["segments"]] == [0, 1]
    assert verbose["words"] == [{"word": "Hello", "start": 0.0, "end": 0.6}]
    assert json.loads(t.render("json"))["text"] == "Hello there. Bye."
    assert "segments" not in json.loads(t.render("verbose_json", words=True, segments=False))


def test_pickles_are_never_taken_for_models(tmp_path: Path) -> None:
    # A PyTorch pickle named model.bin next to a config.json is not a CTranslate2 model, and is
    # refused at registration without being loaded (nothing here ever unpickles).
    import pickle

    model_dir = tmp_path / "evil"
    model_dir.mkdir()
    (model_dir / "model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(InvalidModelFile):
        ModelStore(tmp_path / "home").add_local(model_dir)
    # pytorch_model.bin is no format we load: no weights to serve.
    assert classify_files({"pytorch_model.bin": model_dir / "model.bin", "config.json": model_dir / "config.json"})[2] == ""
