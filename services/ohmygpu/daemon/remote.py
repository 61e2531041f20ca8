"""A remote node (a machine running `omg node join`) as the scheduler and the pool see it.

RemoteNode implements daemon/nodes.Node over the node agent's gRPC service: its inventory and
models come from the node's heartbeats, a launch first makes sure the node holds the model's
files (daemon/node_files.py), then asks the agent to start the worker there with the same
supervisor code the daemon uses. RemoteWorker is a Worker whose Runtime calls go to the agent,
which relays them to the worker message by message (agent/relay.py): every runtime works
remotely unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.artifacts import find_same_files
from ohmygpu.core.certs import tls_name
from ohmygpu.core.errors import BY_GRPC_CODE, OmgError, WorkerFailed
from ohmygpu.daemon.devices import Gpu, Inventory
from ohmygpu.daemon.supervisor import _TRAPS, Worker, WorkerTrapped
from ohmygpu.node.v1 import node_pb2, node_pb2_grpc
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from ohmygpu.runtimes.api.registry import RuntimeEntry

log = logging.getLogger("ohmygpu.nodes")

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
                   # A link that stops answering is found by keepalive pings, not by a hung call.
                   ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
# Errors a node agent names (trailing metadata `omg-error-class`) and the daemon raises again as
# the same class, so a trap on a node marks the model failed as a local one does.
_NAMED_ERRORS: dict[str, type[OmgError]] = {"WorkerTrapped": WorkerTrapped, "WorkerFailed": WorkerFailed}


def agent_error(e: grpc.aio.AioRpcError, what: str) -> OmgError:
    """Our error for a failed NodeAgent call: the class the agent named, else by status code."""
    meta = dict(e.trailing_metadata() or ())
    details = e.details() or e.code().name
    name = meta.get("omg-error-class", "")
    if name in _NAMED_ERRORS:
        return _NAMED_ERRORS[name](details)
    if name == "MissingExtra":
        return OmgError(details)  # the node lacks a runtime's library: its message says which
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return WorkerFailed(f"{what}: the node did not answer ({details})")
    return BY_GRPC_CODE.get(e.code().name, WorkerFailed)(f"{what}: {details}")


def inventory_of(inv: node_pb2.NodeInventory) -> Inventory:
    return Inventory(cpu_count=inv.cpu_count, ram_total=inv.ram_total, ram_available=inv.ram_available,
                     gpus=tuple(Gpu(index=g.index, name=g.name, total=g.memory_total, free=g.memory_free,
                                    used=g.memory_used, utilization=g.utilization, temperature=g.temperature)
                                for g in inv.gpus))


class _BoundStub:
    """A RuntimeStub whose every call carries the session secret and the worker's id; a
    transcription's audio goes inline (the daemon's upload file is not on the node)."""

    def __init__(self, stub: runtime_pb2_grpc.RuntimeStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        if name == "Transcribe":
            return functools.partial(self._transcribe, method)
        return functools.partial(method, metadata=self._metadata)

    def _transcribe(self, method: Callable[..., Any], request: runtime_pb2.TranscribeRequest,
                    **kwargs: Any) -> Any:
        if request.audio_path and not request.audio:
            inline = runtime_pb2.TranscribeRequest()
            inline.CopyFrom(request)
            inline.audio = Path(request.audio_path).read_bytes()  # bounded by OMG_MAX_AUDIO_MB
            inline.audio_path = ""
            request = inline
        return method(request, metadata=self._metadata, **kwargs)


class RemoteWorker(Worker):
    """A worker process on a node, reached through its agent."""

    def __init__(self, node: RemoteNode, model: str, runtime: RuntimeEntry, reply: node_pb2.LaunchResponse) -> None:
        super().__init__(model, runtime, Path("/nonexistent"), Path("/nonexistent"))
        self.remote = node
        self.id = reply.worker_id
        self.node = node.index
        self.remote_pid = reply.pid
        self.log_path = Path(reply.log_path or "/nonexistent")  # on the node, not here
        self.memory_bytes, self.context_length, self.load_ns = reply.memory_bytes, reply.context_length, reply.load_ns
        self.stub = _BoundStub(runtime_pb2_grpc.RuntimeStub(node.channel), node.call_metadata(self.id))  # type: ignore[assignment]
        self._ended = ""  # how it ended, once it has
        self._signal = 0
        self._log_tail = ""

    @property
    def pid(self) -> int:
        return self.remote_pid

    @property
    def alive(self) -> bool:
        return not self._ended and self.remote.up

    @property
    def lost(self) -> bool:
        """Whether it went with its node (a dead link, not a crash of its own)."""
        return not self.remote.up

    def exit_description(self) -> str:
        if self._ended:
            return self._ended
        if not self.remote.up:
            return f"was lost with node {self.remote.name} ({self.remote.down_reason})"
        return "is running"

    def trap_hint(self) -> str | None:
        if self._signal in _TRAPS:
            return _TRAPS[signal.Signals(self._signal)].format(library=self.runtime.library, model=self.model) \
                + f" (on node {self.remote.name})"
        return None

    def death(self, stage: str) -> WorkerFailed:
        hint = self.trap_hint()
        if hint is not None:
            return WorkerTrapped(hint, model=self.model)
        return WorkerFailed(f"worker for '{self.model}' on node {self.remote.name} {self.exit_description()} "
                            f"{stage}: {self._log_tail or 'no output'}", model=self.model)

    def ended(self, description: str, sig: int = 0, log_tail: str = "") -> None:
        """The node reported that the worker exited (or the node was lost)."""
        if not self._ended:
            self._ended, self._signal, self._log_tail = f"{description} (on node {self.remote.name})", sig, log_tail
        self.exited.set()

    async def start(self, record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec,
                    *, timeout_s: float) -> None:
        raise NotImplementedError("a remote worker is started by its node (RemoteNode.launch)")

    async def stop(self, grace_s: float = 3.0) -> None:
        """Ask the node to stop the worker; a node that is down has lost it already."""
        if self.alive:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
                await self.remote.agent.StopWorker(node_pb2.StopWorkerRequest(worker_id=self.id),
                                                   metadata=self.remote.call_metadata(), timeout=grace_s + 5)
            self.ended("was stopped")
        self.exited.set()
        self.remote.workers.pop(self.id, None)


class RemoteNode:
    """A machine that joined with `omg node join`; implements daemon/nodes.Node."""

    def __init__(self, index: int, hello: node_pb2.NodeHello, address: str, secret: str) -> None:
        self.index = index
        self.name = hello.name
        self.up = False
        self.down_reason = ""
        self.workers: dict[str, RemoteWorker] = {}
        self.channel: grpc.aio.Channel | None = None  # type: ignore[assignment]
        self.session(hello, address, secret)

    # -- the session ------------------------------------------------------------------------

    def session(self, hello: node_pb2.NodeHello, address: str, secret: str) -> None:
        """Start a session (a join or a rejoin): the agent's address, certificate and secret,
        and what the node reported."""
        old = self.channel
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())
        self.address = address
        self.labels = dict(hello.labels)
        self.hub_access = hello.hub_access
        self.version = hello.version
        self._secret = secret
        self.models: list[assets_pb2.InstallRecord] = list(hello.models)
        self._inventory = hello.inventory
        self.last_heartbeat = time.time()
        cert = bytes(hello.agent_certificate)
        creds = grpc.ssl_channel_credentials(root_certificates=cert)
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", tls_name(cert))]
        self.channel = grpc.aio.secure_channel(address, creds, options=options)
        self.agent = node_pb2_grpc.NodeAgentServiceStub(self.channel)
        self.up, self.down_reason = True, ""

    def call_metadata(self, worker_id: str = "") -> tuple[tuple[str, str], ...]:
        meta: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {self._secret}"),)
        return meta + ((("omg-worker", worker_id),) if worker_id else ())

    def heartbeat(self, beat: node_pb2.Heartbeat) -> None:
        self.last_heartbeat = time.time()
        self._inventory = beat.inventory
        if beat.models_changed:
            self.models = list(beat.models)

    def worker_exit(self, report: node_pb2.WorkerExit) -> None:
        worker = self.workers.pop(report.worker_id, None)
        if worker is not None:
            log.warning("worker %s for %s on node %s %s", worker.id, worker.model, self.name, report.description)
            worker.ended(report.description, report.signal, report.log_tail)

    async def mark_down(self, reason: str) -> list[RemoteWorker]:
        """The node is gone (no heartbeat, a closed link): its workers are lost and its calls in
        flight end at once (its channel closes). Returns the workers it had."""
        self.up, self.down_reason = False, reason
        lost = list(self.workers.values())
        self.workers.clear()
        for w in lost:
            w.ended(f"was lost with node {self.name} ({reason})")
        if self.channel is not None:
            await self.channel.close()
        return lost

    # -- the Node interface ------------------------------------------------------------------

    @property
    def ram_budget(self) -> int:
        return self._inventory.ram_budget

    def inventory(self) -> Inventory:
        return inventory_of(self._inventory)

    def gpu_capable(self, runtime: str) -> bool:
        return runtime in self._inventory.gpu_runtimes

    def holds(self, record: assets_pb2.InstallRecord) -> bool:
        """Whether the node's store has every file of `record` (by sha256)."""
        return find_same_files(record, self.models) is not None

    async def launch(self, name: str, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                     spec: run_spec_pb2.RunSpec) -> Worker:
        """Start the worker on the node once it holds the files; raises WorkerFailed and kin."""
        if not self.up:
            raise WorkerFailed(f"node {self.name} is down ({self.down_reason})", model=name)
        if self.files is not None:
            await self.files(self, record)
        request = node_pb2.LaunchRequest(model=name, runtime=runtime.name, record=record, spec=spec)
        try:
            reply = await self.agent.Launch(request, metadata=self.call_metadata())
        except grpc.aio.AioRpcError as e:
            raise agent_error(e, f"starting '{name}' on node {self.name}") from None
        except asyncio.CancelledError:
            if not self.up:  # the node went down under the call
                raise WorkerFailed(f"node {self.name} went down while loading '{name}' ({self.down_reason})",
                                   model=name) from None
            raise
        worker = RemoteWorker(self, name, runtime, reply)
        self.workers[worker.id] = worker
        return worker

    # Set by the registry: makes sure the node holds a record's files (daemon/node_files.py).
    files: Callable[[RemoteNode, assets_pb2.InstallRecord], Any] | None = None

    def close(self) -> None:
        if self.channel is not None:
            asyncio.get_event_loop().create_task(self.channel.close())
