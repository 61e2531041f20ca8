"""Files arriving on a node (agent/files.py): only a complete stream whose every file matches the
daemon's sha256 becomes a model in the node's store; anything else leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ohmygpu.agent import files
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.certs import ensure_self_signed, fingerprint, tls_name
from ohmygpu.core.errors import CorruptDownload, InvalidArgument
from ohmygpu.core.store import ModelStore
from ohmygpu.node.v1 import node_pb2


def _record(contents: dict[str, bytes], name: str = "m") -> assets_pb2.InstallRecord:
    record = assets_pb2.InstallRecord(name=name, kind=assets_pb2.MODEL_KIND_LLM, format=assets_pb2.ARTIFACT_FORMAT_GGUF)
    for filename, data in contents.items():
        record.artifacts.add(filename=filename, size=len(data), sha256="sha256:" + hashlib.sha256(data).hexdigest(),
                             local_path=f"/daemon/{filename}")
    return record


async def _stream(record: assets_pb2.InstallRecord, sent: list[int], chunks: list[bytes],
                  ) -> AsyncIterator[node_pb2.ReceiveModelRequest]:
    yield node_pb2.ReceiveModelRequest(header=node_pb2.ModelHeader(record=record, sent=sent))
    for c in chunks:
        yield node_pb2.ReceiveModelRequest(data=c)


def _left(home: Path) -> list[Path]:
    incoming = home / "received" / ".incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


async def test_a_whole_stream_is_verified_placed_and_registered(tmp_path: Path) -> None:
    data = {"model.gguf": b"G" * 3000, "sub/tokenizer.json": b"{}", "empty.txt": b""}
    record = _record(data)
    store = ModelStore(tmp_path)
    try:
        blob = b"".join(data.values())  # chunk boundaries fall anywhere, across files
        got = await files.receive(tmp_path, store, _stream(record, [0, 1, 2], [blob[:1000], blob[1000:2999], blob[2999:]]))
        assert [Path(a.local_path).read_bytes() for a in got.artifacts] == list(data.values())
        assert store.get("m").artifacts[0].local_path == got.artifacts[0].local_path
        assert files.local_copy(store, record) is not None and not _left(tmp_path)
        # A second model sharing a file: only the new one is sent, the held one is linked.
        other = _record({"model.gguf": data["model.gguf"], "extra.bin": b"xyz"}, name="m2")
        got2 = await files.receive(tmp_path, store, _stream(other, [1], [b"xyz"]))
        assert Path(got2.artifacts[0].local_path).read_bytes() == data["model.gguf"]
    finally:
        store.close()


@pytest.mark.parametrize("case", ["flipped", "short", "long"])
async def test_a_damaged_stream_keeps_nothing(tmp_path: Path, case: str) -> None:
    payload = b"W" * 5000
    record = _record({"model.gguf": payload})
    chunks = {"flipped": [payload[:2500] + b"X" + payload[2501:]], "short": [payload[:4000]],
              "long": [payload + b"more"]}[case]
    store = ModelStore(tmp_path)
    try:
        with pytest.raises(CorruptDownload, match="nothing was kept"):
            await files.receive(tmp_path, store, _stream(record, [0], chunks))
        assert store.list() == [] and not _left(tmp_path)
    finally:
        store.close()


@pytest.mark.parametrize("filename", ["../escape.gguf", "/abs.gguf", "a/../../b", "ok/./x", "nul\0byte"])
async def test_a_file_name_that_leaves_the_model_directory_is_refused(tmp_path: Path, filename: str) -> None:
    store = ModelStore(tmp_path)
    try:
        with pytest.raises(InvalidArgument, match="not a safe relative path"):
            await files.receive(tmp_path, store, _stream(_record({filename: b"x"}), [0], [b"x"]))
        assert not (tmp_path.parent / "escape.gguf").exists() and store.list() == []
    finally:
        store.close()


async def test_a_file_not_sent_must_already_be_on_the_node(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    try:
        with pytest.raises(CorruptDownload, match="does not hold it"):
            await files.receive(tmp_path, store, _stream(_record({"a.gguf": b"abc"}), [], []))
        assert not _left(tmp_path)
    finally:
        store.close()


def test_self_signed_certificates_are_made_once_private_and_named(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "tls", "x", "ohmygpu-node")
    assert ensure_self_signed(tmp_path / "tls", "x", "ohmygpu-node") == (cert, key)  # kept, not remade
    assert (tmp_path / "tls" / "x.key").stat().st_mode & 0o077 == 0
    assert tls_name(cert) == "ohmygpu-node"
    assert fingerprint(cert).startswith("sha256:") and len(fingerprint(cert)) == 7 + 64
    with pytest.raises(InvalidArgument):
        tls_name(b"not a certificate")
