"""What every worker process shares: the gRPC server on a Unix socket, parent watch, log ring.

A worker is started by the daemon as `python -m <module> --socket PATH --parent-pid PID`. It
exits when its parent dies (PR_SET_PDEATHSIG where Linux offers it, and a poll as backstop), so
no orphan keeps a model in memory after the daemon is gone.

`python -m <module> --capabilities` prints the servicer's GetCapabilities answer as JSON and
exits, loading no model: the daemon's runtime registry asks each runtime this way, once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from ohmygpu.runtime.v1 import runtime_pb2, runtime_pb2_grpc

log = logging.getLogger("ohmygpu.worker")
_PR_SET_PDEATHSIG = 1


class LogRing(logging.Handler):
    """Keeps the last lines logged in this worker, and wakes followers of StreamLogs."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.waiters: set[asyncio.Queue[str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line)
        for q in list(self.waiters):
            if q.qsize() < 1000:  # a slow follower loses lines rather than growing memory
                q.put_nowait(line)

    async def stream(self, follow: bool) -> AsyncIterator[str]:
        for line in list(self.lines):
            yield line
        if not follow:
            return
        q: asyncio.Queue[str] = asyncio.Queue()
        self.waiters.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.waiters.discard(q)


class BaseRuntime(runtime_pb2_grpc.RuntimeServicer):
    """What every runtime's servicer shares: its state, Health, StreamLogs and status fields, and
    a clear UNIMPLEMENTED naming the runtime for each inference call it does not serve (a worker
    overrides the ones it does)."""

    runtime_name = "this"  # "llama.cpp", "whisper", "sdcpp": how refusals name the runtime

    def __init__(self, logs: LogRing) -> None:
        self.logs = logs
        self.state = runtime_pb2.WORKER_STATE_IDLE
        self.model_name = ""
        self.threads = 0
        self.in_flight = 0

    async def Health(self, request, context):
        return runtime_pb2.HealthResponse(state=self.state)

    async def StreamLogs(self, request, context):
        async for line in self.logs.stream(request.follow):
            yield runtime_pb2.StreamLogsResponse(line=line)

    async def _refuse(self, context: Any, what: str) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the {self.runtime_name} runtime does not {what}")

    async def Chat(self, request, context):
        await self._refuse(context, "chat")
        yield runtime_pb2.ChatResponse()  # pragma: no cover - makes this an async generator

    async def Complete(self, request, context):
        await self._refuse(context, "complete text")
        yield runtime_pb2.CompleteResponse()  # pragma: no cover

    async def Embed(self, request, context):
        await self._refuse(context, "embed text")

    async def CountTokens(self, request, context):
        await self._refuse(context, "count chat prompt tokens")

    async def Transcribe(self, request, context):
        await self._refuse(context, "transcribe audio")
        yield runtime_pb2.TranscribeResponse()  # pragma: no cover

    async def GenerateImage(self, request, context):
        await self._refuse(context, "generate images")
        yield runtime_pb2.GenerateImageResponse()  # pragma: no cover

    async def Speak(self, request, context):
        await self._refuse(context, "speak text")
        yield runtime_pb2.SpeakResponse()  # pragma: no cover

    async def ListVoices(self, request, context):
        await self._refuse(context, "have voices")

    def status(self, **extra: int) -> runtime_pb2.GetStatusResponse:
        """GetStatus's answer from the shared fields, plus runtime-specific ones."""
        return runtime_pb2.GetStatusResponse(
            state=self.state, model=self.model_name, memory_bytes=rss_bytes(), in_flight=self.in_flight,
            threads=self.threads, pid=os.getpid(), **extra)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ohmygpu runtime worker")
    p.add_argument("--socket", help="Unix socket path to serve on")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    p.add_argument("--capabilities", action="store_true",
                   help="print GetCapabilities as JSON and exit (loads no model)")
    args = p.parse_args(argv)
    if not args.socket and not args.capabilities:
        p.error("--socket is required")
    return args


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux; the poll below still applies
    if parent_pid and os.getppid() != parent_pid:
        os._exit(0)  # parent already gone before prctl took effect


async def _watch_parent(parent_pid: int) -> None:
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone; exiting", parent_pid)
            os._exit(0)


def setup_logging() -> LogRing:
    ring = LogRing()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ring.setFormatter(fmt)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [ring, stderr]
    root.setLevel(logging.INFO)
    return ring


async def serve(servicer: runtime_pb2_grpc.RuntimeServicer, socket_path: str, parent_pid: int) -> None:
    """Serve `servicer` on a Unix socket until SIGTERM/SIGINT or the parent's death."""
    if parent_pid:
        _die_with_parent(parent_pid)
    Path(socket_path).unlink(missing_ok=True)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    log.info("worker pid %d serving on %s", os.getpid(), socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(_watch_parent(parent_pid))] if parent_pid else []
    await stop.wait()
    for w in watchers:
        w.cancel()
    await server.stop(grace=1.0)
    Path(socket_path).unlink(missing_ok=True)


def run_worker(make_servicer: Callable[[LogRing], runtime_pb2_grpc.RuntimeServicer],
               argv: list[str] | None = None) -> None:
    """Entry point shared by worker modules."""
    args = parse_args(argv)
    ring = setup_logging()
    if args.capabilities:
        print(capabilities_json(make_servicer(ring)))
        return
    asyncio.run(serve(make_servicer(ring), args.socket, args.parent_pid))


def capabilities_json(servicer: runtime_pb2_grpc.RuntimeServicer) -> str:
    """The servicer's GetCapabilities answer, from the very method the gRPC call runs, as JSON
    (the proto's JSON mapping, which the registry parses back into the message)."""
    from google.protobuf import json_format

    # GetCapabilities reads only the library, never the call's context.
    response = asyncio.run(servicer.GetCapabilities(runtime_pb2.GetCapabilitiesRequest(), None))
    return json_format.MessageToJson(response, indent=None)


def rss_bytes() -> int:
    """Resident memory of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


__all__ = ["LogRing", "capabilities_json", "rss_bytes", "run_worker", "runtime_pb2"]
