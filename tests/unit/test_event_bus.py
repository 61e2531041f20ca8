"""The event bus under a slow reader: the daemon never buffers more than a bounded queue for
one subscriber, others still get every event, and the slow one sees the gap in event ids."""

from __future__ import annotations

import asyncio

from ohmygpu.daemon import events
from ohmygpu.daemon.events import EventBus
from ohmygpu.events.v1 import events_pb2


async def test_a_slow_subscriber_loses_events_not_memory() -> None:
    bus = EventBus()
    slow = bus.subscribe().__aiter__()
    fast = bus.subscribe().__aiter__()
    # Subscribing happens on the first step of each generator: publish one event to take it.
    first = bus.publish(events_pb2.EVENT_KIND_LOAD, "first")
    assert (await slow.__anext__()).id == first.id and (await fast.__anext__()).id == first.id

    fast_seen: list[int] = []

    async def read_fast(n: int) -> None:
        for _ in range(n):
            fast_seen.append((await fast.__anext__()).id)

    total = 5 * events._QUEUE
    for i in range(total):
        bus.publish(events_pb2.EVENT_KIND_LOAD, f"event {i}")
        if i % 100 == 99:  # the fast reader keeps up; the slow one reads nothing meanwhile
            await read_fast(100)
    assert fast_seen == list(range(first.id + 1, first.id + 1 + total))
    assert all(q.qsize() <= events._QUEUE for q in bus._subscribers)  # the slow one's queue is capped

    # The slow reader gets the first _QUEUE events, then whatever came after it caught up:
    # the jump in ids tells it how many it missed.
    backlog = [(await slow.__anext__()).id for _ in range(events._QUEUE)]
    assert backlog == list(range(first.id + 1, first.id + 1 + events._QUEUE))
    later = bus.publish(events_pb2.EVENT_KIND_LOAD, "after the gap")
    assert (await asyncio.wait_for(slow.__anext__(), 1)).id == later.id > backlog[-1] + 1
    await slow.aclose()
    await fast.aclose()
    assert not bus._subscribers  # a reader that goes away leaves nothing behind
