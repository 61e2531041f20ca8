"""A streamed answer whose client goes away mid-send closes its generator at once, not when the
garbage collector gets to it (gateway/streaming.py ClosingStreamingResponse): the generation
behind it, its worker call and its serving slot end with the response."""

from __future__ import annotations

import asyncio
import gc

import pytest
from ohmygpu.gateway.streaming import ClosingStreamingResponse
from starlette.responses import StreamingResponse


def _run(response_class: type[StreamingResponse], spec_version: str) -> bool:
    """Stream from a generator to a client that is gone by the second chunk (send raises, as
    uvicorn's does); return whether the generator's `finally` ran before the response returned.
    The collector is off and the response kept referenced: only an explicit close counts."""
    closed = False

    async def tokens():
        nonlocal closed
        try:
            for i in range(1000):
                yield f"token {i}\n"
                await asyncio.sleep(0)
        finally:
            closed = True

    sent = 0

    async def send(message: dict) -> None:
        nonlocal sent
        if message["type"] == "http.response.body":
            sent += 1
            if sent >= 2:
                raise OSError("the client went away")

    async def receive() -> dict:
        await asyncio.sleep(3600)  # the disconnect shows as a failed send, not a message
        return {"type": "http.disconnect"}

    response = response_class(tokens(), media_type="application/x-ndjson")
    scope = {"type": "http", "asgi": {"spec_version": spec_version}}

    async def main() -> bool:
        try:
            await response(scope, receive, send)
        except Exception:  # noqa: BLE001 - Starlette turns the OSError into ClientDisconnect
            pass
        return closed

    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        gc.enable()


@pytest.mark.parametrize("spec_version", ["2.4", "2.3"])
def test_a_client_gone_mid_send_closes_the_generator_at_once(spec_version: str) -> None:
    assert _run(ClosingStreamingResponse, spec_version) is True


def test_starlettes_own_response_leaves_it_open() -> None:
    """Why the subclass exists: the same client with Starlette's response leaves the generator
    suspended (it would run on, holding its worker, until collected)."""
    assert _run(StreamingResponse, "2.4") is False
