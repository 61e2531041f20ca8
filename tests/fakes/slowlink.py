"""A slow network link for tests: a TCP proxy on loopback that delays every chunk by a one-way
latency and caps the bandwidth, as a remote daemon over a long or thin link would.

Delay is applied per chunk on a timeline (a chunk read at t goes out at t + latency), so
pipelined traffic such as HTTP/2 is not serialised by the proxy, just late: what a real link
does. Counts the bytes each way, so a test can say what a client costs on the wire; `cut()` and
`restore()` take the link down and bring it back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass


@dataclass
class LinkStats:
    upstream_bytes: int = 0  # client -> server
    downstream_bytes: int = 0  # server -> client
    connections: int = 0


class SlowLink:
    """`with SlowLink(target_port, latency_s=0.1) as link:` then connect to `link.port`."""

    def __init__(self, target_port: int, latency_s: float = 0.1, bytes_per_second: int | None = None,
                 target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.latency_s = latency_s
        self.bytes_per_second = bytes_per_second
        self.stats = LinkStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._down = False
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> SlowLink:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("slow link proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        """The link goes down: open connections are dropped, new ones are closed at once."""
        self._down = True

        def drop() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
        self._loop.call_soon_threadsafe(drop)

    def restore(self) -> None:
        """The link is back: new connections get through again (on the same port)."""
        self._down = False

    async def _shutdown(self) -> None:
        """Cut the link: stop listening, end every connection's tasks."""
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._down:
            client_w.transport.abort()
            return
        self.stats.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        try:
            await asyncio.gather(self._pipe(client_r, server_w, upstream=True),
                                 self._pipe(server_r, client_w, upstream=False), return_exceptions=True)
        except asyncio.CancelledError:
            # The link is being cut; end quietly (asyncio's stream callback logs a cancelled
            # connection task as an error).
            client_w.close()
            server_w.close()
        finally:
            self._writers.difference_update((client_w, server_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
                if self.bytes_per_second:
                    await asyncio.sleep(len(data) / self.bytes_per_second)
            writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(16384):
                if upstream:
                    self.stats.upstream_bytes += len(data)
                else:
                    self.stats.downstream_bytes += len(data)
                queue.put_nowait((time.monotonic() + self.latency_s, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()
        except asyncio.CancelledError:
            sender.cancel()
            writer.close()
            raise
