"""Models arriving on a node: streamed from the daemon's store (ReceiveModel) or pulled from the
hub by the node itself (FetchModel).

Streamed files are written under OMG_HOME/received/.incoming/<id>/ while their sha256 is
computed; only when every file of the model matches the daemon's record are they moved into
place (one rename) and the model registered in the node's store. A damaged or short stream
leaves nothing behind: no half-written model ever becomes visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.artifacts import file_digests, find_same_files
from ohmygpu.core.digests import hex_of
from ohmygpu.core.download import check_space
from ohmygpu.core.errors import CorruptDownload, InvalidArgument
from ohmygpu.core.hub import HubClient
from ohmygpu.core.pull import PullProgress, pull
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.node.v1 import node_pb2

def _safe_relative(filename: str) -> Path:
    """`filename` as a relative path that stays inside its directory; raises InvalidArgument."""
    parts = filename.split("/")
    if not filename or "\0" in filename or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"file name {filename!r} in a model sent to this node is not a safe relative path")
    return Path(*parts)


def _held(store: ModelStore) -> dict[str, Path]:
    """sha256 -> a readable local file with that content, from the node's store."""
    out: dict[str, Path] = {}
    for record in store.list():
        for a in record.artifacts:
            if a.sha256 and a.local_path and Path(a.local_path).is_file():
                out.setdefault(a.sha256, Path(a.local_path))
    return out


class _Incoming:
    """One model being received: its temp directory, the file being written, its hash."""

    def __init__(self, home: Path, record: assets_pb2.InstallRecord, sent: list[int]) -> None:
        self.record = record
        self.sent = sent
        self.dir = home / "received" / ".incoming" / uuid.uuid4().hex
        self.dir.mkdir(parents=True)
        self._index = 0  # into `sent`
        self._file: object | None = None
        self._written = 0
        self._hash = hashlib.sha256()
        self.digests: dict[int, str] = {}

    def _path(self, i: int) -> Path:
        return self.dir / _safe_relative(self.record.artifacts[i].filename)

    def _open_next(self) -> None:
        while self._index < len(self.sent) and self.record.artifacts[self.sent[self._index]].size == 0:
            self._finish_empty()
        if self._index < len(self.sent):
            path = self._path(self.sent[self._index])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "wb")
            self._written, self._hash = 0, hashlib.sha256()

    def _finish_empty(self) -> None:
        i = self.sent[self._index]
        path = self._path(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        self.digests[i] = "sha256:" + hashlib.sha256().hexdigest()
        self._index += 1

    def write(self, data: bytes) -> None:
        """Append `data` across file boundaries (sizes come from the record)."""
        view = memoryview(data)
        while view:
            if self._file is None:
                self._open_next()
                if self._file is None:
                    raise CorruptDownload("more bytes arrived than the model's files hold; nothing was kept")
            i = self.sent[self._index]
            want = self.record.artifacts[i].size - self._written
            part = view[:want]
            self._file.write(part)  # type: ignore[attr-defined]
            self._hash.update(part)
            self._written += len(part)
            view = view[len(part):]
            if self._written == self.record.artifacts[i].size:
                self._file.close()  # type: ignore[attr-defined]
                self._file = None
                self.digests[i] = "sha256:" + self._hash.hexdigest()
                self._index += 1

    def finish(self) -> None:
        """Raise CorruptDownload unless every sent file arrived whole with its sha256."""
        if self._file is None:
            self._open_next()  # trailing empty files
        if self._file is not None or self._index < len(self.sent):
            name = self.record.artifacts[self.sent[min(self._index, len(self.sent) - 1)]].filename
            raise CorruptDownload(f"the stream ended before {name} was complete; nothing was kept")
        for i in self.sent:
            a = self.record.artifacts[i]
            if self.digests.get(i) != a.sha256:
                raise CorruptDownload(f"{a.filename} of '{self.record.name}' arrived with sha256 {self.digests.get(i)}, "
                                      f"not the {a.sha256} of the daemon's record; nothing was kept")

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()  # type: ignore[attr-defined]
        shutil.rmtree(self.dir, ignore_errors=True)


def _install(home: Path, store: ModelStore, incoming: _Incoming) -> assets_pb2.InstallRecord:
    """Move the verified files into place and register the model (its files the node held
    already are hard-linked, or copied across file systems)."""
    record = incoming.record
    held = _held(store)
    final = home / "received" / hex_of(record.artifacts[0].sha256 if record.artifacts else "")[:16] / uuid.uuid4().hex[:8]
    for i, a in enumerate(record.artifacts):
        if i in incoming.digests:
            continue
        source = held.get(a.sha256)
        if source is None:
            raise CorruptDownload(f"{a.filename} was not sent and this node does not hold it; nothing was kept")
        dest = incoming.dir / _safe_relative(a.filename)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(incoming.dir, final)
    out = assets_pb2.InstallRecord()
    out.CopyFrom(record)
    for a in out.artifacts:
        a.local_path = str(final / _safe_relative(a.filename))
    store.put(out)
    return out


async def receive(home: Path, store: ModelStore, chunks: AsyncIterator[node_pb2.ReceiveModelRequest]) -> assets_pb2.InstallRecord:
    """Take a ReceiveModel stream; returns the node's record. Raises CorruptDownload (nothing
    kept) or InvalidArgument."""
    first = await anext(aiter(chunks), None)
    if first is None or not first.HasField("header"):
        raise InvalidArgument("a model transfer starts with its header")
    record, sent = first.header.record, list(first.header.sent)
    if any(i >= len(record.artifacts) for i in sent) or len(set(sent)) != len(sent):
        raise InvalidArgument("the transfer header names files the record does not have")
    for a in record.artifacts:
        _safe_relative(a.filename)
    await asyncio.to_thread(check_space, home, sum(record.artifacts[i].size for i in sent))
    incoming = _Incoming(home, record, sent)
    try:
        async for chunk in chunks:
            if chunk.HasField("data"):
                await asyncio.to_thread(incoming.write, chunk.data)
        incoming.finish()
        return await asyncio.to_thread(_install, home, store, incoming)
    except BaseException:
        incoming.discard()
        raise


async def fetch(settings: Settings, store: ModelStore, record: assets_pb2.InstallRecord,
                progress: PullProgress) -> assets_pb2.InstallRecord:
    """Pull the daemon's `record` from the hub into this node's store (same commit, same files);
    raises CorruptDownload when the hub's files are not the daemon's."""
    if record.ref.provider != assets_pb2.PROVIDER_HF or not record.revision.commit:
        raise InvalidArgument(f"'{record.name}' does not come from the hub; the daemon must send its files")
    hub = HubClient(settings.hf_endpoint, settings.hub_token())
    try:
        got = await pull(f"{record.ref.repo}@{record.revision.commit}", store=store, hub=hub,
                         hf_cache=Path(settings.hf_hub_cache), progress=progress, name=record.name,
                         include=[a.filename for a in record.artifacts], max_rate=settings.max_rate,
                         parallel=settings.pull_parallel)
    finally:
        await hub.aclose()
    if not file_digests(record) <= file_digests(got):
        raise CorruptDownload(f"the hub's files of {record.ref.repo}@{record.revision.commit} differ from the "
                              "daemon's copy")
    return got


def local_copy(store: ModelStore, record: assets_pb2.InstallRecord) -> assets_pb2.InstallRecord | None:
    """This node's record holding the daemon's `record`'s files, if any."""
    return find_same_files(record, store.list())
