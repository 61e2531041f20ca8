"""The engine thread's mailbox onto the worker's loop: order kept, one wakeup per burst."""

from __future__ import annotations

import asyncio
import threading
import time

from ohmygpu.runtimes.api.mailbox import Mailbox


async def test_a_burst_from_another_thread_arrives_in_order_with_one_wakeup() -> None:
    loop = asyncio.get_running_loop()
    box = Mailbox(loop)
    drains = 0
    real_drain = box._drain

    def counting_drain() -> None:
        nonlocal drains
        drains += 1
        real_drain()

    box._drain = counting_drain  # type: ignore[method-assign]
    got: list[int] = []
    posted = threading.Event()

    def engine_step() -> None:
        for i in range(100):  # one step's pieces for 100 sequences
            box.post(got.append, i)
        posted.set()

    threading.Thread(target=engine_step).start()
    # Hold the loop the way a busy worker does: the whole burst lands before it drains.
    assert posted.wait(10)
    time.sleep(0.01)
    for _ in range(3):
        await asyncio.sleep(0)
    assert got == list(range(100))
    assert drains == 1

    # The next burst schedules a new wakeup: nothing is left waiting behind a stale flag.
    threading.Thread(target=lambda: box.post(got.append, 100)).start()
    for _ in range(200):
        if len(got) == 101:
            break
        await asyncio.sleep(0.01)
    assert got[-1] == 100 and drains == 2


def test_posting_after_the_loop_closed_is_dropped_not_raised() -> None:
    loop = asyncio.new_event_loop()
    box = Mailbox(loop)
    loop.close()
    box.post(lambda item: None, 1)  # a finishing engine step during worker shutdown
