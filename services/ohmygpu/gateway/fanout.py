"""Several generations for one request (OpenAI's `n`): started together, each one a request
of its own through the daemon API (so they batch on the model's sequences like any others),
read as one stream of (choice index, message).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from ohmygpu.gateway.streaming import primed

M = TypeVar("M")
MAX_CHOICES = 8  # n: more would be a queue of generations behind one request

_END = object()


async def start(open_stream: Callable[[int], AsyncIterator[M]], n: int) -> list[AsyncIterator[M]]:
    """`n` streams, the first one primed (a missing model or a bad request raises here, before
    any response header, as for one stream). The others start when `merged` reads them: each
    choice waits for a slot of the model's queue like any request, and waiting for all of them
    to begin before reading any would hold the first ones' slots against the later ones."""
    first = await primed(open_stream(0))
    return [first, *(open_stream(i) for i in range(1, n))]


async def merged(streams: list[AsyncIterator[M]]) -> AsyncIterator[tuple[int, M]]:
    """Messages of all `streams` as they come, tagged with the stream's index; the first error
    ends the whole stream (the others are cancelled); a consumer that stops cancels them all."""
    if len(streams) == 1:
        try:
            async for message in streams[0]:
                yield 0, message
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[M]) -> None:
        try:
            async for message in stream:
                await queue.put((index, message))
            await queue.put((index, _END))
        except Exception as e:  # noqa: BLE001 - handed to the reader
            await queue.put((index, e))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
