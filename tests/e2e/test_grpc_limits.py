"""gRPC bounds each method's request message by what it needs: a file upload (Transcribe) gets
OMG_MAX_AUDIO_MB, every other method what an HTTP body may hold; a bigger message is refused
before it is parsed, and the daemon's memory stays flat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ohmygpu.api.v1 import audio_pb2, audio_pb2_grpc, chat_pb2_grpc, embeddings_pb2_grpc, models_pb2, models_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2
from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow
BIG = 40 << 20  # over OMG_MAX_BODY_MB (32), far under OMG_MAX_AUDIO_MB (512)


@pytest.fixture(scope="module")
def gd(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, whisper_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("grpc-limits")).start()
    assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
    assert d.omg("model", "add", str(whisper_path), "--name", "whisper-tiny.en").returncode == 0
    yield d
    d.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


def test_big_messages_are_refused_and_memory_stays_flat(gd: DaemonProc) -> None:
    channel = grpc.insecure_channel(gd.grpc_addr)
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    text = "x" * BIG
    calls = [
        lambda: list(chat.Chat(runtime_pb2.ChatRequest(model="smollm2", messages=[
            runtime_pb2.ChatMessage(role="user", content=text)]), timeout=30)),
        lambda: list(chat.Complete(runtime_pb2.CompleteRequest(model="smollm2", prompt=text), timeout=30)),
        lambda: embeddings_pb2_grpc.EmbeddingServiceStub(channel).Embed(
            runtime_pb2.EmbedRequest(model="smollm2", inputs=[text]), timeout=30),
        lambda: models_pb2_grpc.ModelServiceStub(channel).GetModel(models_pb2.GetModelRequest(name=text), timeout=30),
    ]
    assert gd.proc is not None
    before = _rss(gd.proc.pid)
    for _ in range(3):
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
            assert "limit" in e.value.details()
    grown = _rss(gd.proc.pid) - before
    assert grown < 100 << 20, f"daemon grew by {grown >> 20} MiB after 12 refused 40 MiB messages"
    # A message within the limit still works on the same methods.
    ok = list(chat.Chat(runtime_pb2.ChatRequest(model="smollm2", messages=[
        runtime_pb2.ChatMessage(role="user", content="hi")], params={"max_tokens": 2}), timeout=60))
    assert ok[-1].finish_reason


def test_transcribe_keeps_the_upload_limit(gd: DaemonProc, audio: dict[str, Path]) -> None:
    stub = audio_pb2_grpc.AudioServiceStub(grpc.insecure_channel(gd.grpc_addr))
    msgs = list(stub.Transcribe(audio_pb2.TranscribeRequest(model="whisper-tiny.en",
                                                               audio=audio["flac"].read_bytes()), timeout=60))
    assert "fox" in "".join(m.segment.text for m in msgs[1:]).lower()
    # 40 MiB of audio is under OMG_MAX_AUDIO_MB: read, and refused only for not being audio.
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Transcribe(audio_pb2.TranscribeRequest(model="whisper-tiny.en", audio=b"\1" * BIG), timeout=60))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not audio" in e.value.details()
