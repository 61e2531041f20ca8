"""Hands items from a compute thread to an asyncio loop, one loop wakeup per burst.

The batching engine emits a piece for every active sequence at every step. Waking the loop once
per piece (`call_soon_threadsafe` each time) costs a wakeup and a GIL hand-over per token, and on
a machine whose cores all run ggml threads each wakeup preempts one of them mid-graph, stalling
the others at the next barrier. Posting through a mailbox wakes the loop once for everything
posted until it drains: one wakeup per step however many sequences are active.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Mailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[Callable[[Any], None], Any]] = []
        self._scheduled = False

    def post(self, deliver: Callable[[Any], None], item: Any) -> None:
        """Called from any thread: `deliver(item)` runs on the loop, in posting order."""
        with self._lock:
            self._items.append((deliver, item))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: the worker is shutting down, nobody is listening
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for deliver, item in items:
            deliver(item)
