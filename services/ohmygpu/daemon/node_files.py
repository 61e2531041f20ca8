"""Putting a model's files on a node before it loads there.

A node with hub access pulls them itself (its own downloader: resume, sha256, the HF cache
layout); one without receives them from the daemon's store over its agent's gRPC link, in
chunks, and checks every file's sha256 before the model becomes visible in its store. Files the
node already holds (by sha256) are not sent again. Either way the transfer shows as download
events (subject "node:<name>") and, for `omg pull --node`, in the pull job's progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.artifacts import file_digests
from ohmygpu.core.errors import CorruptDownload, OmgError
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.remote import RemoteNode, agent_error
from ohmygpu.events.v1 import events_pb2
from ohmygpu.node.v1 import node_pb2

log = logging.getLogger("ohmygpu.nodes")
CHUNK = 1 << 20  # bytes per message: large enough for the link, small against the message limit
# Progress: (bytes done, bytes in all, stage).
Progress = Callable[[int, int, str], None]


def _to_send(record: assets_pb2.InstallRecord, node: RemoteNode) -> list[int]:
    """Indexes of `record`'s files the node lacks (by sha256)."""
    held = set().union(*(file_digests(r) for r in node.models)) if node.models else set()
    return [i for i, a in enumerate(record.artifacts) if a.sha256 not in held]


async def _chunks(record: assets_pb2.InstallRecord, sent: list[int], progress: Progress,
                  total: int) -> AsyncIterator[node_pb2.ReceiveModelRequest]:
    yield node_pb2.ReceiveModelRequest(header=node_pb2.ModelHeader(record=record, sent=sent))
    done = 0
    for i in sent:
        path = Path(record.artifacts[i].local_path)
        with open(path, "rb") as f:  # read in a thread: a disk read must not stall the event loop
            while True:
                data = await asyncio.to_thread(f.read, CHUNK)
                if not data:
                    break
                done += len(data)
                progress(done, total, f"sending {record.artifacts[i].filename}")
                yield node_pb2.ReceiveModelRequest(data=data)


class NodeFiles:
    """Makes nodes hold the models they are asked to load."""

    def __init__(self, events: EventBus) -> None:
        self.events = events
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _publisher(self, node: RemoteNode, record: assets_pb2.InstallRecord,
                   extra: Progress | None) -> Progress:
        last = [0.0]

        def progress(done: int, total: int, stage: str) -> None:
            if extra is not None:
                extra(done, total, stage)
            now = time.monotonic()
            if now - last[0] >= 0.5 or done >= total:  # events at most twice a second
                last[0] = now
                self.events.publish(events_pb2.EVENT_KIND_DOWNLOAD, f"{record.name} to node {node.name}: {stage}",
                                    subject=f"node:{node.name}", completed=done, total=total, unit="bytes",
                                    state="progress")
        return progress

    async def ensure(self, node: RemoteNode, record: assets_pb2.InstallRecord,
                     progress: Progress | None = None) -> None:
        """Return once `node` holds every file of `record`; raises OmgError (CorruptDownload when
        a file arrived damaged: nothing of it is kept on the node)."""
        key = (node.name, record.name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if node.holds(record):
                return
            publish = self._publisher(node, record, progress)
            started = time.monotonic()
            how = "pulled by the node from the hub" if self._pulls_itself(node, record) else "streamed from the daemon"
            self.events.publish(events_pb2.EVENT_KIND_DOWNLOAD, f"{record.name} to node {node.name}: {how}",
                                subject=f"node:{node.name}", state="started", total=record.size_bytes, unit="bytes")
            try:
                if self._pulls_itself(node, record):
                    reply = await self._fetch(node, record, publish)
                else:
                    reply = await self._send(node, record, publish)
            except OmgError as e:
                self.events.publish(events_pb2.EVENT_KIND_ERROR, f"{record.name} to node {node.name} failed: {e.message}",
                                    subject=f"node:{node.name}", level=events_pb2.LEVEL_ERROR)
                raise
            node.models = [r for r in node.models if r.name != reply.name] + [reply]
            log.info("%s is on node %s (%s, %.1fs)", record.name, node.name, how, time.monotonic() - started)
            self.events.publish(events_pb2.EVENT_KIND_DOWNLOAD, f"{record.name} is on node {node.name}",
                                subject=f"node:{node.name}", state="done", completed=record.size_bytes,
                                total=record.size_bytes, unit="bytes")

    @staticmethod
    def _pulls_itself(node: RemoteNode, record: assets_pb2.InstallRecord) -> bool:
        return node.hub_access and record.ref.provider == assets_pb2.PROVIDER_HF and bool(record.revision.commit)

    async def _fetch(self, node: RemoteNode, record: assets_pb2.InstallRecord,
                     progress: Progress) -> assets_pb2.InstallRecord:
        call = node.agent.FetchModel(node_pb2.FetchModelRequest(record=record), metadata=node.call_metadata())
        try:
            async for p in call:
                progress(p.completed, p.total, p.stage)
        except grpc.aio.AioRpcError as e:
            raise agent_error(e, f"node {node.name} pulling '{record.name}'") from None
        # Same files by sha256 (the node checked): enough for `holds` until its next report.
        return record

    async def _send(self, node: RemoteNode, record: assets_pb2.InstallRecord,
                    progress: Progress) -> assets_pb2.InstallRecord:
        sent = _to_send(record, node)
        total = sum(record.artifacts[i].size for i in sent)
        for i in sent:
            if not Path(record.artifacts[i].local_path).is_file():
                raise OmgError(f"cannot send '{record.name}' to node {node.name}: "
                               f"{record.artifacts[i].filename} is missing from the daemon's store")
        try:
            reply = await node.agent.ReceiveModel(_chunks(record, sent, progress, total),
                                                  metadata=node.call_metadata())
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DATA_LOSS:
                raise CorruptDownload(f"node {node.name}: {e.details()}") from None
            raise agent_error(e, f"sending '{record.name}' to node {node.name}") from None
        return reply.record
