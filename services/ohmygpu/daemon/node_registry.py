"""The daemon's side of nodes: the node listener (TLS, the join token), each node's join stream,
heartbeats and the watchdog that marks silent nodes down.

A node agent dials the listener, presents OMG_NODE_TOKEN (compared in constant time) and says
hello; the daemon answers with a session secret the agent will require of every call the
daemon makes to it, and appends (or, for a node coming back under its name, revives) a
RemoteNode in the orchestrator's node list, where placement sees it. A node is down when its
stream closes or no heartbeat came for OMG_NODE_DOWN_AFTER_S: its workers are dropped, the
calls in flight on it end with an error, pinned runs are placed again elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access
from ohmygpu.core.certs import ensure_self_signed, fingerprint
from ohmygpu.core.errors import InvalidArgument, NotFound, Unavailable
from ohmygpu.core.netaddr import split_addr
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.node_files import NodeFiles
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.remote import RemoteNode
from ohmygpu.events.v1 import events_pb2
from ohmygpu.node.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger("ohmygpu.nodes")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DAEMON_TLS_NAME = "ohmygpu-daemon"  # the DNS name in the daemon's self-signed node certificate


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:10.0.0.2:5123", "ipv6:[::1]:5123")."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0]  # keeps the brackets: "[::1]"
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else ""


class NodeRegistry(node_pb2_grpc.NodeServiceServicer):
    """The nodes that joined this daemon."""

    def __init__(self, settings: Settings, orchestrator: Orchestrator, events: EventBus) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self.events = events
        self.files = NodeFiles(events)
        self._sessions: dict[str, asyncio.Task[object]] = {}  # node name -> its Join handler's task
        self._watchdog: asyncio.Task[None] | None = None
        self._server: grpc.aio.Server | None = None
        self.fingerprint = ""
        self.address = ""
        self._closing = False
        # Run (as tasks) when a node comes up: runs waiting for one (RunManager.node_up).
        self.on_up: list[Callable[[RemoteNode], Awaitable[None]]] = []

    # -- the listener -------------------------------------------------------------------------

    def _credentials(self) -> tuple[grpc.ServerCredentials, bytes]:
        if self.settings.tls_cert and self.settings.tls_key:
            cert, key = Path(self.settings.tls_cert).read_bytes(), Path(self.settings.tls_key).read_bytes()
        else:
            cert, key = ensure_self_signed(self.settings.home_path / "tls", "node-listener", DAEMON_TLS_NAME)
        return grpc.ssl_server_credentials([(key, cert)]), cert

    async def start(self) -> None:
        """Listen for nodes on OMG_NODE_ADDR when OMG_NODE_TOKEN is set (else nothing: no node
        can join). Raises Unavailable when the address is taken."""
        if not self.settings.node_token:
            return
        credentials, cert = self._credentials()
        self.fingerprint = fingerprint(cert)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                          ("grpc.keepalive_permit_without_calls", 1),
                                          ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                                          ("grpc.http2.max_ping_strikes", 0)])
        node_pb2_grpc.add_NodeServiceServicer_to_server(self, server)
        try:
            port = server.add_secure_port(self.settings.node_addr, credentials)
        except RuntimeError:
            port = 0
        if not port:
            raise Unavailable(f"cannot listen for nodes on {self.settings.node_addr}: address in use or invalid; "
                              "set OMG_NODE_ADDR")
        host, _ = split_addr(self.settings.node_addr)
        self.address = f"{host}:{port}"
        await server.start()
        self._server = server
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        log.warning("nodes may join on %s (TLS certificate %s)", self.address, self.fingerprint)
        print(f"omg nodes join on {self.address}: omg node join <this host>:{port} --token <OMG_NODE_TOKEN> "
              f"--fingerprint {self.fingerprint}", flush=True)

    async def stop(self) -> None:
        self._closing = True  # the daemon is stopping: its nodes are not "down", nothing is re-placed
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in list(self._sessions.values()):
            task.cancel()
        if self._server is not None:
            await self._server.stop(grace=0.5)

    # -- nodes ----------------------------------------------------------------------------------

    def remote_nodes(self) -> list[RemoteNode]:
        return [n for n in self.orchestrator.nodes if isinstance(n, RemoteNode)]

    def _find(self, name: str) -> RemoteNode | None:
        return next((n for n in self.remote_nodes() if n.name == name), None)

    async def _watch(self) -> None:
        """Mark down the nodes whose heartbeats stopped (a cut link sends no close)."""
        while True:
            await asyncio.sleep(min(0.5, self.settings.node_down_after_s / 4))
            now = time.time()
            for node in self.remote_nodes():
                silent = now - node.last_heartbeat
                if node.up and silent > self.settings.node_down_after_s:
                    await self.down(node, f"no heartbeat for {silent:.1f}s")
                    task = self._sessions.pop(node.name, None)
                    if task is not None:
                        task.cancel()

    async def down(self, node: RemoteNode, reason: str) -> None:
        if not node.up:
            return
        log.error("node %s is down: %s", node.name, reason)
        await self.orchestrator.node_down(node, reason)
        self.events.publish(events_pb2.EVENT_KIND_NODE, f"node {node.name} is down: {reason}",
                            subject=f"node:{node.name}", level=events_pb2.LEVEL_ERROR, state="down", reason=reason)

    async def place_files(self, name: str, record: assets_pb2.InstallRecord,
                          progress: Callable[[int, int, str], None] | None = None) -> None:
        """Make node `name` hold `record`'s files (`omg pull --node`); raises NotFound for an
        unknown node, Unavailable for one that is down, and what the transfer raises."""
        node = self._find(name)
        if node is None:
            raise NotFound(f"no node is named '{name}' (`omg node ls` lists them)")
        if not node.up:
            raise Unavailable(f"node {name} is down ({node.down_reason})")
        await self.files.ensure(node, record, progress)

    # -- the join stream ------------------------------------------------------------------------

    async def _refuse(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        log.warning("node join from %s refused: %s", context.peer(), message)
        await context.abort(code, message)

    async def Join(self, request_iterator, context):  # type: ignore[override]  # bidi stream
        metadata = dict(context.invocation_metadata() or ())
        # No token set accepts no node (token_matches alone would let an empty one through).
        if not self.settings.node_token or not access.token_matches(self.settings.node_token,
                                                                    metadata.get("authorization")):
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED,
                               "this daemon does not accept that join token (OMG_NODE_TOKEN)")
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("hello"):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "a join starts with the node's hello")
        hello = first.hello
        try:
            address = self._address(hello, context.peer())
        except InvalidArgument as e:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e.message)
        node = self._find(hello.name)
        if node is not None and node.up:
            await self._refuse(context, grpc.StatusCode.ALREADY_EXISTS,
                               f"a node named {hello.name} is connected already; give this one another --name")
        secret = secrets.token_urlsafe(32)
        back = node is not None
        if node is None:
            node = RemoteNode(len(self.orchestrator.nodes), hello, address, secret)
            node.files = self.files.ensure
            self.orchestrator.nodes.append(node)
        else:
            node.session(hello, address, secret)
        task = asyncio.current_task()
        assert task is not None
        self._sessions[node.name] = task
        await context.write(node_pb2.JoinResponse(welcome=node_pb2.Welcome(
            session_secret=secret, heartbeat_interval_ms=int(self.settings.node_heartbeat_s * 1000),
            down_after_ms=int(self.settings.node_down_after_s * 1000))))
        what = "is back" if back else "joined"
        log.warning("node %s %s from %s (%d models, %s)", node.name, what, address, len(node.models),
                    "pulls from the hub" if node.hub_access else "files streamed from the daemon")
        self.events.publish(events_pb2.EVENT_KIND_NODE, f"node {node.name} {what} ({address}, "
                            f"{len(node.models)} models)", subject=f"node:{node.name}",
                            state="back" if back else "joined", address=address)
        for callback in self.on_up:
            asyncio.get_running_loop().create_task(callback(node))
        reason = "its link closed"
        try:
            while True:
                report = await context.read()
                if report is grpc.aio.EOF:
                    reason = "it left"
                    break
                if report.HasField("heartbeat"):
                    node.heartbeat(report.heartbeat)
                    await context.write(node_pb2.JoinResponse(ack=node_pb2.HeartbeatAck()))
                elif report.HasField("worker_exit"):
                    node.worker_exit(report.worker_exit)
                    self.events.publish(events_pb2.EVENT_KIND_CRASH,
                                        f"a worker on node {node.name} {report.worker_exit.description}",
                                        subject=f"node:{node.name}", level=events_pb2.LEVEL_ERROR)
        except grpc.aio.AioRpcError:
            reason = "its link closed"
        finally:  # a cancel (the node's connection dropped, the watchdog, shutdown) passes through
            # Only the node's current session ends it (a stale one must not down a rejoined node).
            if self._sessions.get(node.name) is task:
                del self._sessions[node.name]
                if not self._closing:
                    with contextlib.suppress(Exception):
                        await self.down(node, reason)

    def _address(self, hello: node_pb2.NodeHello, peer: str) -> str:
        if not _NAME.fullmatch(hello.name) or hello.name == "local":
            raise InvalidArgument(f"node name {hello.name!r}: use letters, digits, . _ - (not 'local')")
        host, sep, port = hello.agent_address.rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidArgument(f"agent address {hello.agent_address!r} is not host:port")
        if host in ("", "0.0.0.0", "[::]", "::"):
            host = peer_host(peer)
        return f"{host}:{port}"

