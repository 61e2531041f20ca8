"""`omg node join`: the agent that lends this machine to a daemon.

It keeps one Join stream open to the daemon (TLS, the daemon's certificate pinned by fingerprint
or CA; the join token), reports its inventory and store every heartbeat, and serves the daemon
it joined, and only that daemon (the session secret of its welcome), on its own TLS port: it
starts and stops workers with the daemon's own supervisor code (daemon/nodes.LocalNode), relays
their Runtime calls (agent/relay.py) and takes in model files (agent/files.py). When the daemon
stops answering it reconnects with backoff; each new session starts with no worker, because a
daemon that lost the node has forgotten them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from ohmygpu.core import access
from ohmygpu.core.certs import ensure_self_signed, fetch_pinned, tls_name
from ohmygpu.core.errors import InvalidArgument, MissingExtra, OmgError, WorkerFailed
from ohmygpu.core.netaddr import split_addr
from ohmygpu.core.pull import PullProgress
from ohmygpu.core.settings import Settings, split_list
from ohmygpu.core.store import ModelStore
from ohmygpu.core.version import __version__
from ohmygpu.daemon.devices import Gpu, Inventory, probe
from ohmygpu.daemon.nodes import LocalNode
from ohmygpu.daemon.remote import CHANNEL_OPTIONS
from ohmygpu.daemon.supervisor import Worker, WorkerTrapped, _tail
from ohmygpu.agent import files
from ohmygpu.agent.relay import RuntimeRelay
from ohmygpu.node.v1 import node_pb2, node_pb2_grpc
from ohmygpu.runtimes.api.registry import RUNTIMES, supports_gpu

log = logging.getLogger("ohmygpu.node")
AGENT_TLS_NAME = "ohmygpu-node"


def parse_labels(text: str) -> dict[str, str]:
    """"k=v,k2=v2" as a dict; raises InvalidArgument for an item without '='."""
    out = {}
    for item in split_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"label {item!r}: write key=value")
        out[key.strip()] = value.strip()
    return out


def shaped_inventory(text: str) -> Callable[[], Inventory] | None:
    """An inventory function from OMG_NODE_INVENTORY's JSON (a shaped test machine), else None."""
    if not text:
        return None
    try:
        data = json.loads(text)
        gpus = tuple(Gpu(index=int(g.get("index", i)), name=str(g.get("name", "GPU")), total=int(g["total"]),
                         free=int(g.get("free", g["total"])), used=int(g.get("used", 0)))
                     for i, g in enumerate(data.get("gpus", [])))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidArgument(f"OMG_NODE_INVENTORY is not an inventory: {e}") from None

    def inventory() -> Inventory:
        real = probe()
        return Inventory(cpu_count=int(data.get("cpu_count", real.cpu_count)),
                         ram_total=int(data.get("ram_total", real.ram_total)),
                         ram_available=int(data.get("ram_available", data.get("ram_total", real.ram_available))),
                         gpus=gpus)
    return inventory


def hub_reachable(settings: Settings) -> bool:
    """OMG_NODE_HUB: on, off, or auto (HF_ENDPOINT answers anything within 3 s)."""
    mode = settings.node_hub.strip().lower()
    if mode in ("on", "1", "true", "yes"):
        return True
    if mode in ("off", "0", "false", "no"):
        return False
    try:
        httpx.head(settings.hf_endpoint, timeout=3.0)
        return True
    except httpx.HTTPError:
        return False


class _Session:
    """One welcome: its secret, and the outgoing reports."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.outbox: asyncio.Queue[node_pb2.JoinRequest] = asyncio.Queue()


class NodeAgent(node_pb2_grpc.NodeAgentServiceServicer):
    """Everything `omg node join` runs."""

    def __init__(self, settings: Settings, *, daemon_addr: str) -> None:
        self.settings = settings
        self.daemon_addr = daemon_addr
        self.name = settings.node_name or socket.gethostname().split(".")[0]
        self.labels = parse_labels(settings.node_labels)
        self.home = settings.home_path
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(self.home)
        self.machine = LocalNode(settings, self.store, inventory=shaped_inventory(settings.node_inventory))
        self.workers: dict[str, Worker] = {}
        self._stopping: set[str] = set()  # workers stopped on request: their exit is not a crash
        self.session: _Session | None = None
        self._models_changed = True
        self.cert, self.key = ensure_self_signed(self.home / "tls", "agent", AGENT_TLS_NAME)
        self.stop_event = asyncio.Event()
        self.hub_access = False
        self._gpu_runtimes: list[str] | None = None

    # -- what the node reports ---------------------------------------------------------------

    def _inventory(self) -> node_pb2.NodeInventory:
        inv = self.machine.inventory()
        if self._gpu_runtimes is None:  # asks each runtime's library once (a child process each)
            self._gpu_runtimes = [n for n in RUNTIMES if inv.gpus and supports_gpu(n)]
        return node_pb2.NodeInventory(
            cpu_count=inv.cpu_count, ram_total=inv.ram_total, ram_available=inv.ram_available,
            ram_budget=self.machine.ram_budget, gpu_runtimes=self._gpu_runtimes,
            gpus=[node_pb2.NodeGpu(index=g.index, name=g.name, memory_total=g.total, memory_free=g.free,
                                   memory_used=g.used, utilization=g.utilization, temperature=g.temperature)
                  for g in inv.gpus])

    def _hello(self) -> node_pb2.NodeHello:
        _, port = split_addr(self.settings.node_listen)
        return node_pb2.NodeHello(
            name=self.name, agent_address=self.settings.node_advertise or f":{self._port or port}",
            agent_certificate=self.cert, labels=self.labels, inventory=self._inventory(),
            models=self.store.list(), hub_access=self.hub_access, version=__version__)

    # -- the daemon's calls --------------------------------------------------------------------

    async def _fail(self, context: grpc.aio.ServicerContext, e: OmgError) -> None:
        context.set_trailing_metadata((("omg-error-class", type(e).__name__),))
        await context.abort(grpc.StatusCode[e.grpc_code], e.message)

    async def Launch(self, request: node_pb2.LaunchRequest, context: grpc.aio.ServicerContext) -> node_pb2.LaunchResponse:
        record = await asyncio.to_thread(files.local_copy, self.store, request.record)
        runtime = RUNTIMES.get(request.runtime)
        try:
            if record is None:
                raise WorkerFailed(f"node {self.name} does not hold the files of '{request.model}'")
            if runtime is None:
                raise InvalidArgument(f"node {self.name} has no runtime '{request.runtime}' (version {__version__})")
            worker = await self.machine.launch(request.model, runtime, record, request.spec)
        except (OmgError, MissingExtra) as e:
            await self._fail(context, e)
            raise
        self.workers[worker.id] = worker
        asyncio.get_running_loop().create_task(self._watch(worker))
        log.info("worker %s (pid %d) serves %s", worker.id, worker.pid, request.model)
        return node_pb2.LaunchResponse(worker_id=worker.id, pid=worker.pid, memory_bytes=worker.memory_bytes,
                                       context_length=worker.context_length, load_ns=worker.load_ns,
                                       log_path=str(worker.log_path))

    async def _watch(self, worker: Worker) -> None:
        await worker.exited.wait()
        if self.workers.pop(worker.id, None) is None or worker.id in self._stopping:
            return
        code = worker.proc.returncode if worker.proc else 0
        report = node_pb2.WorkerExit(worker_id=worker.id, description=worker.exit_description(),
                                     signal=-code if code and code < 0 else 0, log_tail=_tail(worker.log_path))
        log.warning("worker %s for %s %s", worker.id, worker.model, report.description)
        if self.session is not None:
            self.session.outbox.put_nowait(node_pb2.JoinRequest(worker_exit=report))

    async def StopWorker(self, request: node_pb2.StopWorkerRequest, context: grpc.aio.ServicerContext) -> node_pb2.StopWorkerResponse:
        worker = self.workers.get(request.worker_id)
        if worker is None:
            return node_pb2.StopWorkerResponse(stopped=False)
        self._stopping.add(worker.id)
        await worker.stop()
        self.workers.pop(worker.id, None)
        return node_pb2.StopWorkerResponse(stopped=True)

    async def FetchModel(self, request: node_pb2.FetchModelRequest, context: grpc.aio.ServicerContext):  # type: ignore[override]
        progress = PullProgress()
        changed = asyncio.Event()
        progress.changed = changed.set
        task = asyncio.get_running_loop().create_task(files.fetch(self.settings, self.store, request.record, progress))
        try:
            while not task.done():
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.5)
                yield node_pb2.FetchModelResponse(completed=progress.completed, total=progress.total, stage=progress.stage)
            task.result()
        except OmgError as e:
            await self._fail(context, e)
        finally:
            task.cancel()
        self._models_changed = True
        yield node_pb2.FetchModelResponse(completed=progress.total, total=progress.total, stage="done")

    async def ReceiveModel(self, request_iterator, context: grpc.aio.ServicerContext) -> node_pb2.ReceiveModelResponse:  # type: ignore[override]
        try:
            record = await files.receive(self.home, self.store, request_iterator)
        except OmgError as e:
            log.error("a model sent by the daemon was refused: %s", e.message)
            await self._fail(context, e)
            raise
        self._models_changed = True
        log.info("received %s (%d files) from the daemon", record.name, len(record.artifacts))
        return node_pb2.ReceiveModelResponse(record=record)

    # -- the agent's server --------------------------------------------------------------------

    def _interceptor(self) -> grpc.aio.ServerInterceptor:
        agent = self

        class Auth(grpc.aio.ServerInterceptor):
            async def intercept_service(self, continuation, details):  # type: ignore[override]
                handler = await continuation(details)
                session = agent.session
                presented = dict(details.invocation_metadata or ()).get("authorization")
                if session is not None and session.secret and access.token_matches(session.secret, presented):
                    return handler
                return _deny(handler)
        return Auth()

    async def _serve(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[self._interceptor()], options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_ping_strikes", 0)])
        node_pb2_grpc.add_NodeAgentServiceServicer_to_server(self, server)
        server.add_generic_rpc_handlers([RuntimeRelay(self.workers.get)])
        try:
            port = server.add_secure_port(self.settings.node_listen, grpc.ssl_server_credentials([(self.key, self.cert)]))
        except RuntimeError:
            port = 0
        if not port:
            raise OmgError(f"cannot listen on {self.settings.node_listen} for the daemon: address in use or invalid; "
                           "set --listen (OMG_NODE_LISTEN)")
        self._port = port
        await server.start()
        return server

    _port = 0

    # -- the join stream -------------------------------------------------------------------------

    def _daemon_credentials(self) -> tuple[grpc.ChannelCredentials, str]:
        if self.settings.node_ca:
            pem = Path(self.settings.node_ca).read_bytes()
        elif self.settings.node_fingerprint:
            host, port = split_addr(self.daemon_addr)
            pem = fetch_pinned(host.strip("[]"), port, self.settings.node_fingerprint)
        else:
            raise InvalidArgument("give the daemon's certificate fingerprint (--fingerprint, printed by `omg serve` "
                                  "and `omg node ls`) or its certificate (--ca): a node trusts only that daemon")
        return grpc.ssl_channel_credentials(root_certificates=pem), tls_name(pem)

    async def _join_once(self, credentials: grpc.ChannelCredentials, name: str) -> bool:
        """One session; returns whether the daemon welcomed the node (else the backoff grows).
        Raises OmgError for a refusal that retrying cannot fix (a wrong token)."""
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", name)]
        async with grpc.aio.secure_channel(self.daemon_addr, credentials, options=options) as channel:
            call = node_pb2_grpc.NodeServiceStub(channel).Join(
                metadata=(("authorization", f"Bearer {self.settings.node_token}"),))
            try:
                await call.write(node_pb2.JoinRequest(hello=await asyncio.to_thread(self._hello)))
                first = await asyncio.wait_for(call.read(), 30)
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ALREADY_EXISTS,
                                grpc.StatusCode.INVALID_ARGUMENT):
                    raise OmgError(f"the daemon at {self.daemon_addr} refused this node: {e.details()}") from None
                log.warning("cannot reach the daemon at %s: %s", self.daemon_addr, e.details())
                return False
            except (asyncio.TimeoutError, asyncio.InvalidStateError):
                return False  # no answer, or the call failed before the hello went out (refused)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                return False
            welcome = first.welcome
            await self._stop_workers()  # a new session: the daemon knows none of the old ones
            session = _Session(welcome.session_secret)
            self.session = session
            self._models_changed = False  # the hello carried them
            print(f"omg node {self.name}: joined {self.daemon_addr}", flush=True)
            log.warning("joined the daemon at %s as %s", self.daemon_addr, self.name)
            interval = max(0.05, welcome.heartbeat_interval_ms / 1000)
            down_after = max(interval * 2, welcome.down_after_ms / 1000)
            writer = asyncio.get_running_loop().create_task(self._write(call, session, interval))
            try:
                while True:
                    message = await asyncio.wait_for(call.read(), down_after)
                    if message is grpc.aio.EOF:
                        log.warning("the daemon ended the session")
                        break
            except asyncio.TimeoutError:
                log.warning("no answer from the daemon for %.1fs; reconnecting", down_after)
            except grpc.aio.AioRpcError as e:
                log.warning("lost the daemon at %s: %s", self.daemon_addr, e.details())
            finally:
                writer.cancel()
                call.cancel()
                if self.session is session:
                    self.session = None
            return True

    async def _write(self, call: Any, session: _Session, interval: float) -> None:
        """The only writer of the stream: heartbeats every `interval`, worker reports at once."""
        next_beat = time.monotonic()
        while True:
            timeout = max(0.0, next_beat - time.monotonic())
            try:
                report = await asyncio.wait_for(session.outbox.get(), timeout)
            except asyncio.TimeoutError:
                changed, self._models_changed = self._models_changed, False
                beat = node_pb2.Heartbeat(inventory=await asyncio.to_thread(self._inventory),
                                          models_changed=changed)
                if changed:
                    beat.models.extend(await asyncio.to_thread(self.store.list))
                report = node_pb2.JoinRequest(heartbeat=beat)
                next_beat = time.monotonic() + interval
            try:
                await call.write(report)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the stream ended: the reader sees it and the agent reconnects

    async def _stop_workers(self) -> None:
        workers = list(self.workers.values())
        self._stopping.update(w.id for w in workers)
        self.workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)

    async def run(self) -> None:
        """Serve and stay joined until SIGTERM/SIGINT. Raises OmgError when it cannot start or
        the daemon refuses it."""
        if not self.settings.node_token:
            raise InvalidArgument("a node joins with the daemon's token: --token or OMG_NODE_TOKEN")
        credentials, name = await asyncio.to_thread(self._daemon_credentials)
        self.hub_access = await asyncio.to_thread(hub_reachable, self.settings)
        server = await self._serve()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        log.warning("node %s (pid %d): agent on port %d, home %s, %s", self.name, os.getpid(), self._port, self.home,
                    "pulls from the hub" if self.hub_access else "no hub access: the daemon streams files")
        backoff = 0.25
        joined = loop.create_task(self._stay_joined(credentials, name, backoff))
        stop = loop.create_task(self.stop_event.wait())
        try:
            await asyncio.wait({joined, stop}, return_when=asyncio.FIRST_COMPLETED)
            if joined.done():
                joined.result()  # a refusal: raise it
        finally:
            joined.cancel()
            stop.cancel()
            await self._stop_workers()
            await server.stop(grace=0.5)
            self.machine.close()
            self.store.close()

    async def _stay_joined(self, credentials: grpc.ChannelCredentials, name: str, backoff: float) -> None:
        while True:
            try:
                welcomed = await self._join_once(credentials, name)
            except OmgError:
                raise  # refused: retrying cannot help
            except Exception:  # any other failure of one session: the agent lives on and retries
                log.exception("the session with the daemon failed; reconnecting")
                welcomed = False
            backoff = 0.25 if welcomed else min(5.0, backoff * 2)
            await asyncio.sleep(backoff)


def _deny(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this node serves only the daemon it joined")

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this node serves only the daemon it joined")
        yield  # pragma: no cover  # makes this an async generator

    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)


def join(settings: Settings, daemon_addr: str) -> int:
    """Run the agent in the foreground; returns the exit code."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a daemon that goes away: EPIPE, not death (daemon/server.py)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(NodeAgent(settings, daemon_addr=daemon_addr).run())
    except OmgError as e:
        print(f"omg node: {e.message}", file=sys.stderr, flush=True)
        return 1
    return 0

