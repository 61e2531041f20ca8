"""`omg serve`: the daemon process. gRPC and HTTP share one event loop.

Refuses to start, with a message saying why, when another daemon holds the same OMG_HOME, when
a port is taken, or when it would listen beyond loopback without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO

import grpc
import uvicorn
from ohmygpu.core.errors import InvalidArgument, OmgError, Unavailable
from ohmygpu.core.netaddr import is_loopback, split_addr
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.api import SERVICES, DaemonAPI
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.grpc_errors import TokenInterceptor
from ohmygpu.daemon.grpc_limits import MessageLimitInterceptor
from ohmygpu.daemon.jobs import JobManager
from ohmygpu.daemon.metrics import Metrics
from ohmygpu.daemon.node_registry import NodeRegistry
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.readiness import LISTENERS, RUNS, STORE, Readiness
from ohmygpu.daemon.runs import RunManager
from ohmygpu.daemon.services import add_services
from ohmygpu.daemon.training import TrainingJobs
from ohmygpu.runtimes.api.standard_services import StandardServices

log = logging.getLogger("ohmygpu.daemon")
# WebSockets (the event stream, GET /v1/events): clients send nothing but control frames, so a
# message may be small; a peer that stops answering pings is dropped.
WS_MAX_MESSAGE_BYTES = 16 << 10
WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0


class _Uvicorn(uvicorn.Server):
    # The daemon handles signals for both servers; uvicorn must not take them over.
    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


class Daemon:
    """Everything `omg serve` runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home_path
        self.stop_event = asyncio.Event()
        self._lock_file: IO[str] | None = None

    def _check_exposure(self) -> None:
        for name in ("http_addr", "grpc_addr"):
            host, _ = split_addr(getattr(self.settings, name))
            if not is_loopback(host) and not self.settings.token:
                raise InvalidArgument(
                    f"{name} {getattr(self.settings, name)} is reachable from other machines; "
                    "set OMG_TOKEN (or --token) so that only clients with the token get in")

    def _grpc_credentials(self) -> grpc.ServerCredentials | None:
        """TLS for gRPC when OMG_TLS_CERT/OMG_TLS_KEY are set; raises InvalidArgument when unreadable."""
        if not self.settings.tls_cert and not self.settings.tls_key:
            return None
        if not (self.settings.tls_cert and self.settings.tls_key):
            raise InvalidArgument("TLS needs both OMG_TLS_CERT and OMG_TLS_KEY")
        try:
            cert = Path(self.settings.tls_cert).read_bytes()
            key = Path(self.settings.tls_key).read_bytes()
        except OSError as e:
            raise InvalidArgument(f"cannot read the TLS certificate or key: {e.strerror} ({e.filename})") from None
        return grpc.ssl_server_credentials([(key, cert)])

    def _take_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        f = open(self.home / "daemon.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise Unavailable(
                f"another omg daemon (pid {holder}) is using OMG_HOME {self.home}; "
                "stop it with `omg serve stop` or pick another OMG_HOME") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def _bind_http(self) -> socket.socket:
        host, port = split_addr(self.settings.http_addr)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto is
        # IPPROTO_TCP, and accepted sockets inherit it. With proto 0, a response's head and body
        # (two writes) waited for the client's delayed ACK: 40 ms on every keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise Unavailable(f"cannot listen for HTTP on {self.settings.http_addr}: {e.strerror}; "
                              "is another server using it? set OMG_HTTP_ADDR") from None
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    async def run(self) -> None:
        """Serve until Shutdown, SIGTERM or SIGINT. Raises OmgError when it cannot start."""
        from ohmygpu.gateway.app import build_app
        from ohmygpu.gateway.connection import ConnectionLimits, protocol_for

        self._check_exposure()
        self._grpc_credentials()  # a bad TLS setting fails before anything starts
        self._take_lock()
        readiness, metrics = Readiness(), Metrics()
        store = ModelStore(self.home)
        readiness.done(STORE)
        bus = EventBus()
        orchestrator = Orchestrator(self.settings, store, events=bus, metrics=metrics)
        jobs = JobManager(self.settings, store, events=bus)
        training = TrainingJobs(self.settings, store, orchestrator, jobs, bus)  # the "train" jobs
        runs = RunManager(self.home, orchestrator)
        nodes = NodeRegistry(self.settings, orchestrator, bus)
        nodes.on_up.append(runs.node_up)  # runs waiting for a node (after a restart) start when it joins
        jobs.to_node = nodes.place_files
        metrics.watch(orchestrator, jobs=jobs, events=bus, readiness=readiness)
        api = DaemonAPI(self.settings, store, orchestrator, jobs=jobs, runs=runs, events=bus,
                        request_shutdown=self.stop_event.set, nodes=nodes, metrics=metrics,
                        readiness=readiness, training=training)
        interceptors = [TokenInterceptor(self.settings.token, self.settings.admin_token)] \
            if self.settings.token or self.settings.admin_token else []
        # Audio arrives in one message: the server's limit follows OMG_MAX_AUDIO_MB (plus room for
        # fields); every other method is bounded like an HTTP body (daemon/grpc_limits.py).
        interceptors.append(MessageLimitInterceptor((self.settings.max_body_mb << 20) + (64 << 10)))
        max_message = (max(self.settings.max_audio_mb, self.settings.max_body_mb) + 1) << 20
        grpc_server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", max_message)])
        add_services(api, grpc_server)
        standard = StandardServices(grpc_server, (s.full_name for s in SERVICES.values()))
        http_sock = self._bind_http()
        try:
            if self._grpc_credentials() is not None:
                bound = grpc_server.add_secure_port(self.settings.grpc_addr, self._grpc_credentials())
            else:
                bound = grpc_server.add_insecure_port(self.settings.grpc_addr)
            if bound == 0:
                raise RuntimeError("port 0")
        except RuntimeError:
            http_sock.close()
            raise Unavailable(f"cannot listen for gRPC on {self.settings.grpc_addr}: address in use "
                              "or invalid; is another daemon running? set OMG_GRPC_ADDR") from None
        app = build_app(self.settings, api)
        tls = {"ssl_certfile": self.settings.tls_cert, "ssl_keyfile": self.settings.tls_key} \
            if self.settings.tls_cert else {}
        # Our protocol bounds heads, times out slow clients and caps connections (uvicorn's does not);
        # a WebSocket upgrade is handed, after its bounded head, to uvicorn's websockets protocol.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="websockets-sansio",
                                ws_max_size=WS_MAX_MESSAGE_BYTES, ws_ping_interval=WS_PING_INTERVAL_S,
                                ws_ping_timeout=WS_PING_TIMEOUT_S, ws_per_message_deflate=False,
                                http=protocol_for(ConnectionLimits.of(self.settings)), **tls)
        http_server = _Uvicorn(config)
        await grpc_server.start()
        await standard.serving()
        try:
            await nodes.start()
        except OmgError:
            await grpc_server.stop(grace=0)
            http_sock.close()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        (self.home / "daemon.json").write_text(json.dumps({
            "pid": os.getpid(), "http_addr": self.settings.http_addr,
            "grpc_addr": self.settings.grpc_addr}))
        http_task = asyncio.create_task(http_server.serve(sockets=[http_sock]))
        listening = asyncio.create_task(_when_serving(http_server, http_task, readiness))
        jobs.resume_unfinished()
        restore = asyncio.create_task(_restore(runs, readiness))  # pinned runs load in the background
        log.warning("omg daemon pid %d: HTTP on %s, gRPC on %s, home %s", os.getpid(),
                    self.settings.http_addr, self.settings.grpc_addr, self.home)
        scheme = "https" if self.settings.tls_cert else "http"
        print(f"omg daemon listening: HTTP {scheme}://{self.settings.http_addr} "
              f"gRPC {self.settings.grpc_addr}", flush=True)
        try:
            await self.stop_event.wait()
        finally:
            log.warning("shutting down")
            readiness.stopping()
            http_server.should_exit = True
            restore.cancel()
            listening.cancel()
            await nodes.stop()
            await standard.shutting_down()
            await jobs.close()  # first: a training job must not see its worker stop and restart it
            training.close()
            await orchestrator.shutdown()
            runs.close()
            await grpc_server.stop(grace=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(http_task, 5)
            store.close()
            (self.home / "daemon.json").unlink(missing_ok=True)
            if self._lock_file is not None:
                self._lock_file.close()


async def _when_serving(server: uvicorn.Server, task: asyncio.Task[None], readiness: Readiness) -> None:
    """Mark the listeners up once uvicorn serves (gRPC and the node listener started before it)."""
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        readiness.done(LISTENERS)
    else:
        readiness.fail(LISTENERS, "the HTTP server stopped while starting")


async def _restore(runs: RunManager, readiness: Readiness) -> None:
    """Restore the pinned runs; ready once each has been tried (one that cannot be is failed)."""
    try:
        await runs.restore()
    except Exception:  # a bug, not a run that failed (restore marks those): serve, but not ready
        log.exception("restoring runs failed")
        readiness.fail(RUNS, "restoring the pinned runs failed; see the daemon log")
        return
    readiness.done(RUNS)


def serve(settings: Settings) -> int:
    """Run the daemon in the foreground; returns the process exit code."""
    # A client that goes away mid-answer must be an EPIPE on its socket, never the daemon's
    # death: the CLI restores SIGPIPE's default (for `omg ls | head`), and a daemon started as
    # `python -m ohmygpu.cli.main serve` inherited it and died when an event stream was closed.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(Daemon(settings).run())
    except OmgError as e:
        print(f"omg serve: {e.message}", file=sys.stderr, flush=True)
        return 1
    return 0


def state_file(home: Path) -> Path:
    return home / "daemon.json"
