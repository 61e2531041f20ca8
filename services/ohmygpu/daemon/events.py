"""The event bus: every component publishes typed events; subscribers (gRPC streams, SSE,
`omg events`) each get a bounded queue, so a slow reader loses events instead of growing the
daemon's memory."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp
from ohmygpu.events.v1 import events_pb2

log = logging.getLogger("ohmygpu.events")
_HISTORY = 200
_QUEUE = 1000


class EventBus:
    """Publish/subscribe within the daemon's event loop."""

    def __init__(self) -> None:
        self._next_id = 1
        self._history: collections.deque[events_pb2.Event] = collections.deque(maxlen=_HISTORY)
        self._subscribers: set[asyncio.Queue[events_pb2.Event]] = set()

    @property
    def subscriber_count(self) -> int:
        """Streams subscribed now (each gRPC, SSE, NDJSON or WebSocket reader)."""
        return len(self._subscribers)

    def publish(self, kind: int, message: str, *, subject: str = "",
                level: int = events_pb2.LEVEL_INFO, completed: int = 0, total: int = 0, unit: str = "",
                **attributes: str) -> events_pb2.Event:
        ts = Timestamp()
        ts.GetCurrentTime()
        event = events_pb2.Event(id=self._next_id, time=ts, kind=kind, level=level, subject=subject,
                                 message=message, attributes={k: str(v) for k, v in attributes.items()})
        if total or completed:
            event.progress.completed, event.progress.total, event.progress.unit = completed, total, unit
        self._next_id += 1
        self._history.append(event)
        for q in list(self._subscribers):
            if q.full():
                continue  # a slow subscriber misses events; the daemon does not buffer for it
            q.put_nowait(event)
        return event

    async def subscribe(self, *, after_id: int = 0, kinds: set[int] | None = None) -> AsyncIterator[events_pb2.Event]:
        """Recent events after `after_id`, then new ones, until the consumer stops."""
        q: asyncio.Queue[events_pb2.Event] = asyncio.Queue(maxsize=_QUEUE)
        self._subscribers.add(q)
        try:
            for event in list(self._history):
                if event.id > after_id and (not kinds or event.kind in kinds):
                    yield event
            while True:
                event = await q.get()
                if event.id > after_id and (not kinds or event.kind in kinds):
                    yield event
        finally:
            self._subscribers.discard(q)
